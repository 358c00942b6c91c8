"""Secrets that are not given in the environment are generated once and kept in the data folder.

The file ``<data>/secrets.json`` (mode 600) is shared by every process of one installation, so
the controller, the API and Asterisk's config agree on the ARI password and the token key (and
the cluster's processes on the password of its PostgreSQL role).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from ivr.settings import Settings

GENERATED = ("ari_password", "secret_key", "postgres_password")


def _read_or_create(path: Path) -> dict[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        values = {name: secrets.token_urlsafe(32) for name in GENERATED}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of this installation wrote it first: use theirs
        else:
            with os.fdopen(fd, "w") as out:
                json.dump(values, out)
    stored: dict[str, str] = json.loads(path.read_text())
    missing = [name for name in GENERATED if name not in stored]
    if missing:
        stored.update({name: secrets.token_urlsafe(32) for name in missing})
        path.write_text(json.dumps(stored))
    return stored


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with generated secrets filled in."""
    settings = Settings(**overrides)  # type: ignore[arg-type]
    stored = _read_or_create(settings.data_path / "secrets.json")
    if settings.ari_password is None:
        settings.ari_password = SecretStr(stored["ari_password"])
    if settings.secret_key is None:
        settings.secret_key = SecretStr(stored["secret_key"])
    return settings


def postgres_password(settings: Settings) -> str:
    """The password of the cluster's PostgreSQL role (``ivr.cluster.postgres``):
    ``IVR_POSTGRES_PASSWORD`` if set, else the one generated in the data folder."""
    given = os.environ.get("IVR_POSTGRES_PASSWORD")
    if given:
        return given
    return _read_or_create(settings.data_path / "secrets.json")["postgres_password"]
