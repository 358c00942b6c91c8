"""The parts that need no running server: settings, secrets, the DID table, Asterisk's
configuration, the call state machine and prompt rendering (real espeak-ng and sox)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from ivr.controller.state import ALLOWED_MOVES, CallState, IllegalMove, check_move
from ivr.controller.store import CallData
from ivr.lines import DidTable, LineKind
from ivr.pbx.asterisk import TEMPLATES, AsteriskSetupError, render_template, template_values
from ivr.prompts import Prompt, duration_seconds, render_prompt
from ivr.secrets import load_settings

PROJECT = Path(__file__).resolve().parents[1]


def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    first = load_settings(data_dir=tmp_path, project_dir=tmp_path)
    again = load_settings(data_dir=tmp_path, project_dir=tmp_path)
    assert first.ari_secret() == again.ari_secret()
    assert len(first.ari_secret()) >= 32
    mode = stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode)
    assert mode == 0o600


def test_secret_from_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IVR_ARI_PASSWORD", "from-the-environment")
    assert load_settings(data_dir=tmp_path).ari_secret() == "from-the-environment"


def test_shipped_did_table_lists_120_121_and_every_district_twice() -> None:
    table = DidTable.load(PROJECT / "dialplans" / "dids.yaml")
    assert table.lookup("120") is not None and table.lookup("120").line == LineKind.MAIN
    assert table.lookup("121").line == LineKind.WATERWORKS  # type: ignore[union-attr]
    offices = {d.district for d in table.dids if d.line == LineKind.DISTRICT_OFFICE}
    centers = {d.district for d in table.dids if d.line == LineKind.HEALTH_CENTER}
    assert len(offices) == 25 and offices == centers
    assert table.lookup("0299999999") is None


def test_did_listed_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="listed twice"):
        DidTable.model_validate({"dids": [{"number": "120", "line": "main"},
                                          {"number": "120", "line": "waterworks"}]})


def test_district_line_without_district_is_refused() -> None:
    with pytest.raises(ValidationError, match="must name its district"):
        DidTable.model_validate({"dids": [{"number": "0201200101", "line": "district_office"}]})


def test_asterisk_config_renders_every_placeholder(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, project_dir=PROJECT, trunk_match="127.0.0.1, "
                             "192.0.2.0/24", sip_port=5070)
    values = template_values(settings)
    rendered = {t.name: render_template(t.read_text(), values, t.name)
                for t in TEMPLATES.glob("*.conf")}
    assert "match = 127.0.0.1\nmatch = 192.0.2.0/24" in rendered["pjsip.conf"]
    assert "bind = 127.0.0.1:5070" in rendered["pjsip.conf"]
    assert settings.ari_secret() in rendered["ari.conf"]
    assert "Stasis(ivr,${EXTEN})" in rendered["extensions.conf"]
    assert "bindaddr = 127.0.0.1" in rendered["http.conf"]  # ARI on loopback by default


def test_unknown_placeholder_is_an_error() -> None:
    with pytest.raises(AsteriskSetupError, match="unknown placeholder"):
        render_template("bind = @@nowhere@@", {}, "x.conf")


def test_call_state_moves() -> None:
    check_move(CallState.RINGING, CallState.IN_MENU)
    check_move(CallState.IN_MENU, CallState.QUEUED)
    with pytest.raises(IllegalMove):
        check_move(CallState.ENDED, CallState.IN_MENU)
    with pytest.raises(IllegalMove):
        check_move(CallState.RINGING, CallState.TALKING)
    # Every state can end (a caller can always hang up), except the end itself.
    assert all(CallState.ENDED in moves for state, moves in ALLOWED_MOVES.items()
               if state != CallState.ENDED)


def test_call_data_survives_redis() -> None:
    data = CallData(channel_id="1.2", record_id="r", did="120", line="main",
                    state=CallState.IN_MENU, path=["main", "water"])
    assert CallData.from_redis(data.to_redis()) == data


def test_prompt_is_rendered_once_for_the_telephone(tmp_path: Path) -> None:
    prompt = Prompt("hello", "ko", "안녕하세요")
    assert render_prompt(prompt, tmp_path) is True
    wav = tmp_path / "ko" / "hello.wav"
    assert duration_seconds(wav) > 0.3
    import wave

    with wave.open(str(wav)) as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (8000, 1, 2)
    assert render_prompt(prompt, tmp_path) is False  # unchanged: not rendered again
    assert render_prompt(Prompt("hello", "ko", "안녕히 계세요"), tmp_path) is True
