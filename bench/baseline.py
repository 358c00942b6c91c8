"""The baseline: the same Asterisk installation as the product's, configured the plain way (a
dialplan menu with Background/WaitExten and app_queue) from the files of bench/baseline, and
no controller. Everything else (SIP transport, trunk, codecs, RTP, music on hold) is the
product's own configuration, rendered from asterisk/templates, so that only the call handling
differs."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ivr.pbx import asterisk
from ivr.secrets import load_settings
from ivr.settings import Settings

FILES = Path(__file__).resolve().parent / "baseline"

# Its own ports, apart from the product's in bench/stacks.py.
PORTS: dict[str, object] = {"sip_port": 25160, "ari_port": 28188, "api_port": 28100,
                            "redis_port": 26479, "rtp_start": 50000, "rtp_end": 59999}


@dataclass
class Baseline:
    settings: Settings
    process: subprocess.Popen[bytes]
    root: asterisk.RootFolder | None
    log_path: Path

    @property
    def sip_target(self) -> str:
        return f"127.0.0.1:{self.settings.sip_port}"

    def pids(self) -> dict[str, int]:
        return {"asterisk": self.process.pid}

    def stop(self) -> None:
        asterisk.cli(self.settings, "core stop now")
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.root is not None:
            self.root.unmount()


def _render(text: str, values: dict[str, str], name: str) -> str:
    return asterisk.render_template(text, values, name)


def configure(settings: Settings, agents: list[str], agent_port: int,
              menu_audio: dict[str, Path]) -> None:
    """The product's rendered configuration, with the baseline's dialplan, queue, agents and
    modules in place of the controller's. ``menu_audio``: the greeting and main menu files."""
    asterisk.render_config(settings)
    etc = asterisk.asterisk_dirs(settings)["etc"]
    sounds = settings.data_path / "sounds"
    sounds.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, source in menu_audio.items():
        shutil.copyfile(source, sounds / f"{name}.wav")
        files[name] = str(sounds / name)  # Background takes the name without its extension
    (etc / "extensions.conf").write_text(
        _render((FILES / "extensions.conf").read_text(), files, "extensions.conf"))
    members = "\n".join(f"member => PJSIP/{agent}" for agent in agents)
    (etc / "queues.conf").write_text(
        _render((FILES / "queues.conf").read_text(), {"members": members}, "queues.conf"))
    agent_block = (FILES / "agent.conf").read_text()
    with (etc / "pjsip.conf").open("a") as pjsip:
        for agent in agents:
            pjsip.write("\n" + _render(agent_block, {"agent": agent,
                                                     "agent_port": str(agent_port)}, "agent"))
    with (etc / "modules.conf").open("a") as modules:
        modules.write("\n" + (FILES / "modules.conf").read_text())


def start_baseline(base: Path, agents: list[str], agent_port: int,
                   menu_audio: dict[str, Path]) -> Baseline:
    """Asterisk with the baseline's configuration in ``base`` (emptied first), once booted."""
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    settings = load_settings(data_dir=base / "data", **PORTS)
    configure(settings, agents, agent_port, menu_audio)
    root = None
    if settings.uses_asterisk_root:
        root = asterisk.RootFolder(settings.asterisk_root_path, settings.data_path)
        root.mount()
    log_path = base / "asterisk.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(asterisk.command(settings, "-f"), stdout=log_file,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    baseline = Baseline(settings, process, root, log_path)
    deadline = time.monotonic() + 60
    while "fully booted" not in asterisk.cli(settings, "core waitfullybooted").lower():
        if process.poll() is not None or time.monotonic() > deadline:
            baseline.stop()
            raise RuntimeError(f"the baseline's Asterisk did not start; see {log_path}")
        time.sleep(0.5)
    return baseline
