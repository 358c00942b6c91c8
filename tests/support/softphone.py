"""baresip, a real command-line softphone, as an agent's phone in tests: it registers with the
agent's SIP account and answers calls by itself (or lets them ring, to test no-answer)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

from tests.support.sip import free_udp_port


class Softphone:
    def __init__(self, workdir: Path, username: str, password: str, registrar: str,
                 answer: bool = True) -> None:
        self.folder = workdir / f"baresip-{username}"
        self.username = username
        self.password = password
        self.registrar = registrar
        self.answer = answer
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Softphone:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        port = free_udp_port()
        tone = self.folder / "voice.wav"
        subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(tone),
                        "synth", "300", "sine", "300"], check=True)
        (self.folder / "config").write_text(
            "poll_method epoll\n"
            f"sip_listen 127.0.0.1:{port}\n"
            f"audio_player aufile,{self.folder / 'heard.wav'}\n"
            f"audio_source aufile,{tone}\n"
            "audio_alert aufile,/dev/null\n"
            "module_path /usr/lib/baresip/modules\n"
            "module g711.so\nmodule aufile.so\n"
            "module_app account.so\nmodule_app menu.so\n")
        answermode = "auto" if self.answer else "manual"
        (self.folder / "accounts").write_text(
            f"<sip:{self.username}@{self.registrar};transport=udp>;auth_pass={self.password};"
            f"answermode={answermode};regint=60\n")
        self.log = (self.folder / "baresip.log").open("wb")
        self.process = subprocess.Popen(["baresip", "-f", str(self.folder)],
                                        stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        return self

    def output(self) -> str:
        return (self.folder / "baresip.log").read_text(errors="replace")

    async def registered(self, timeout: float = 15) -> None:
        for _ in range(int(timeout / 0.1)):
            if "200 OK" in self.output():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.username} did not register:\n{self.output()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
