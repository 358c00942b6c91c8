"""The parts that need no running server: settings, secrets, the DID table, Asterisk's
configuration, the call state machine and prompt rendering (real espeak-ng and sox)."""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ivr.controller.records import CallRecords
from ivr.controller.state import ALLOWED_MOVES, CallState, IllegalMove, check_move
from ivr.controller.store import CallData
from ivr.db import create_engine, init_schema
from ivr.models import CallEvent, CallRecord
from ivr.pbx.asterisk import TEMPLATES, AsteriskSetupError, render_template, template_values
from ivr.prompts import Prompt, duration_seconds, render
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


def test_asterisk_config_renders_every_placeholder(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, project_dir=PROJECT, trunk_match="127.0.0.1, "
                             "192.0.2.0/24", sip_port=5070)
    values = template_values(settings)
    rendered = {t.name: render_template(t.read_text(), values, t.name)
                for t in TEMPLATES.glob("*.conf")}
    assert "match = 127.0.0.1\nmatch = 192.0.2.0/24" in rendered["pjsip.conf"]
    assert "bind = 127.0.0.1:5070" in rendered["pjsip.conf"]
    assert settings.ari_secret() in rendered["ari.conf"]
    assert "Set(IVR_APPS=ivr)" in rendered["extensions.conf"]
    two = template_values(load_settings(data_dir=tmp_path, project_dir=PROJECT, controllers=2))
    assert "Set(IVR_APPS=ivr-1&ivr-2)" in render_template(
        (TEMPLATES / "extensions.conf").read_text(), two, "extensions.conf")
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
    first = render(prompt, tmp_path)
    wav = first.with_name(first.name + ".wav")
    assert duration_seconds(first) > 0.3
    import wave

    with wave.open(str(wav)) as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (8000, 1, 2)
    made = wav.stat().st_mtime_ns
    assert render(prompt, tmp_path) == first and wav.stat().st_mtime_ns == made  # reused
    changed = render(Prompt("hello", "ko", "안녕히 계세요"), tmp_path)
    assert changed != first and duration_seconds(first) > 0  # the old file stays for old calls


async def test_records_written_together_and_a_bad_one_fails_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Call records are committed in groups (real SQLite): writes made at the same moment all
    land, and a write that breaks a rule fails alone, not the others of its group."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'records.sqlite'}")
    await init_schema(engine)
    records = CallRecords(engine)
    calls = [CallData(channel_id=f"chan-{n}", record_id=f"rec-{n}", did="120") for n in range(3)]
    at = datetime.now(UTC)
    await records.started(calls[0], at)
    results = await asyncio.gather(
        records.started(calls[1], at),
        records.started(calls[0], at),  # the same record twice: refused by the primary key
        records.event(calls[1], "queued", detail="general:ko"),
        records.started(calls[2], at),
        return_exceptions=True)
    assert "a group of 4 writes failed" in caplog.text  # they were one transaction
    assert isinstance(results[1], IntegrityError)
    assert [r for n, r in enumerate(results) if n != 1] == [None, None, None]
    async with engine.connect() as connection:
        ids = (await connection.execute(select(CallRecord.id))).scalars().all()
        kinds = (await connection.execute(select(CallEvent.kind))).scalars().all()
    assert sorted(ids) == ["rec-0", "rec-1", "rec-2"] and kinds == ["queued"]
    await engine.dispose()
