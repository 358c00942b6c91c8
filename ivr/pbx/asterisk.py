"""Asterisk: its configuration, rendered from asterisk/templates, and how it is started.

The rendered configuration lives in the data folder (``<data>/asterisk/etc``) and Asterisk is
started with ``-C`` pointing at it, so that several installations (a running server and the
test suite) can share one Asterisk installation without touching its own /etc/asterisk.

Where Debian has no asterisk package, Asterisk runs from a Debian sid root folder
(asterisk/install.sh builds it) under chroot. /proc, /dev and the data folder are mounted into
that root, the data folder at the same path as outside, so that every path (config, prompts)
means the same inside and out.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from ivr.settings import Settings

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parents[2] / "asterisk" / "templates"


class AsteriskSetupError(Exception):
    """Asterisk cannot be started as configured; the message says what to do."""


def asterisk_dirs(settings: Settings) -> dict[str, Path]:
    base = settings.data_path / settings.asterisk_dir
    return {name: base / name for name in ("etc", "lib", "spool", "run", "log", "cache")}


def config_file(settings: Settings) -> Path:
    return asterisk_dirs(settings)["etc"] / "asterisk.conf"


def template_values(settings: Settings) -> dict[str, str]:
    dirs = asterisk_dirs(settings)
    matches = [item.strip() for item in settings.trunk_match.split(",") if item.strip()]
    return {
        "etc_dir": str(dirs["etc"]),
        "lib_dir": str(dirs["lib"]),
        "spool_dir": str(dirs["spool"]),
        "run_dir": str(dirs["run"]),
        "log_dir": str(dirs["log"]),
        "cache_dir": str(dirs["cache"]),
        "node_id": settings.node_id,
        "ari_bind": settings.ari_bind,
        "ari_port": str(settings.ari_port),
        "ari_user": settings.ari_user,
        "ari_password": settings.ari_secret(),
        "stasis_apps": "&".join(settings.stasis_apps),
        "stasis_app_count": str(len(settings.stasis_apps)),
        "api_port": str(settings.api_port),
        "sip_bind": settings.sip_bind,
        "sip_port": str(settings.sip_port),
        "trunk_match_lines": "\n".join(f"match = {item}" for item in matches),
        "trunk_contact_line": f"contact = {settings.trunk_contact}" if settings.trunk_contact
        else "; no IVR_TRUNK_CONTACT: no calls out (callbacks are not offered)",
        "rtp_start": str(settings.rtp_start),
        "rtp_end": str(settings.rtp_end),
        "moh_dir": str(settings.data_path / "moh"),
    }


def render_template(text: str, values: dict[str, str], name: str = "template") -> str:
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    if "@@" in text:
        start = text.index("@@")
        raise AsteriskSetupError(f"{name}: unknown placeholder near {text[start:start + 40]!r}")
    return text


def render_config(settings: Settings) -> Path:
    """Write Asterisk's configuration into the data folder; returns asterisk.conf's path."""
    dirs = asterisk_dirs(settings)
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    values = template_values(settings)
    for template in sorted(TEMPLATES.glob("*.conf")):
        target = dirs["etc"] / template.name
        target.write_text(render_template(template.read_text(), values, template.name))
    _music_on_hold(settings.data_path / "moh")
    # ari.conf holds the ARI password: readable by its owner only.
    (dirs["etc"] / "ari.conf").chmod(0o600)
    return config_file(settings)


def _music_on_hold(folder: Path) -> None:
    """A calm tune made with sox, until an admin puts the center's own music in moh/."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.glob("*.wav")):
        return
    subprocess.run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(folder / "hold.wav"),
         "synth", "0.6", "sine", "523", "sine", "659", "sine", "784", "sine", "659",
         "fade", "0.05", "0.6", "0.1", "repeat", "24", "vol", "0.3"],
        check=True, capture_output=True)


# --- The root folder (chroot) -------------------------------------------------------------------


def _mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as mounts:
        return any(line.split()[4] == target for line in mounts)


def _others_in_root(root: Path) -> bool:
    """Whether any process other than ours runs inside this root folder."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if os.readlink(entry / "root") == str(root):
                return True
        except OSError:
            continue
    return False


def _hosts_file(root: Path) -> None:
    # Without the host name in /etc/hosts, Asterisk stalls on DNS under load (FINDINGS.md).
    hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else ""
    hostname = os.uname().nodename
    if hostname not in hosts.split():
        hosts += f"\n127.0.1.1 {hostname}\n"
    (root / "etc" / "hosts").write_text(hosts)


class RootFolder:
    """Mounts what Asterisk needs inside the root folder, and unmounts it afterwards."""

    def __init__(self, root: Path, data_dir: Path) -> None:
        self.root = root
        self.data_dir = data_dir
        self._mounted: list[Path] = []

    def check(self) -> None:
        if not (self.root / "usr/sbin/asterisk").exists():
            raise AsteriskSetupError(
                f"no Asterisk in the root folder {self.root}: run asterisk/install.sh "
                "(make run and make test do) or set IVR_ASTERISK_ROOT"
            )
        if os.geteuid() != 0:
            raise AsteriskSetupError("running Asterisk from its root folder needs root (chroot)")

    def mount(self) -> None:
        self.check()
        _hosts_file(self.root)
        (self.root / "var/run/asterisk").mkdir(parents=True, exist_ok=True)
        data_inside = self.root / str(self.data_dir).lstrip("/")
        for source, target, args in (
            ("proc", self.root / "proc", ["-t", "proc"]),
            ("/dev", self.root / "dev", ["--bind"]),
            (str(self.data_dir), data_inside, ["--bind"]),
        ):
            target.mkdir(parents=True, exist_ok=True)
            if _mounted(target):
                continue  # shared with another installation using this root folder
            subprocess.run(["mount", *args, source, str(target)], check=True)
            self._mounted.append(target)

    def unmount(self) -> None:
        data_inside = self.root / str(self.data_dir).lstrip("/")
        # The data folder is this installation's own; /proc and /dev may serve another one.
        targets = [data_inside]
        if not _others_in_root(self.root):
            targets += [self.root / "dev", self.root / "proc"]
        for target in targets:
            if _mounted(target):
                result = subprocess.run(["umount", str(target)], capture_output=True)
                if result.returncode != 0:
                    subprocess.run(["umount", "-l", str(target)], capture_output=True)
        self._mounted.clear()


def command(settings: Settings, *args: str) -> list[str]:
    """The command line that runs Asterisk (or its CLI with ``-rx``) for these settings."""
    base = [settings.asterisk_binary, "-C", str(config_file(settings)), *args]
    if settings.uses_asterisk_root:
        return ["chroot", str(settings.asterisk_root_path), *base]
    binary = shutil.which("asterisk") or settings.asterisk_binary
    return [binary, *base[1:]]


def cli(settings: Settings, text: str, timeout: float = 10) -> str:
    """Run one Asterisk CLI command on the running Asterisk and return what it printed."""
    result = subprocess.run(command(settings, "-rx", text), capture_output=True, text=True,
                            timeout=timeout)
    return result.stdout
