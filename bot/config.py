"""Typed configuration: a TOML file plus ``HELPDESK_<SECTION>__<KEY>`` environment variables.

Precedence, highest first: environment variables, the TOML file, built-in defaults. The file is
``--config PATH``, else ``$HELPDESK_CONFIG``, else none (defaults only). Problems surface as one
:class:`ConfigError` naming the key and what is wrong; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.errors import ConfigError
from kb.hours import BusinessHours, parse_business_hours

CONFIG_ENV = "HELPDESK_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class TelegramSettings(_Section):
    token: SecretStr = SecretStr("")
    api_url: str = ""
    poll_timeout: int = Field(default=30, ge=0, le=50)
    agents_chat_id: int = 0  # the forum supergroup of the agents; 0 = escalation off
    agents: list[int] = Field(default_factory=list)  # agent user ids; empty = every member
    editors: list[int] = Field(default_factory=list)  # user ids who may ingest by sending a document
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str = ""  # public HTTPS URL Telegram posts updates to (webhook mode)
    webhook_listen: str = "127.0.0.1:8080"  # host:port the webhook server binds
    webhook_secret: SecretStr = SecretStr("")  # X-Telegram-Bot-Api-Secret-Token; required in webhook mode

    @model_validator(mode="after")
    def _check_url(self) -> Self:
        if self.api_url and not self.api_url.startswith(("http://", "https://")):
            raise ValueError("api_url must start with http:// or https://")
        if self.mode == "webhook":
            if not self.webhook_url.startswith(("http://", "https://")):
                raise ValueError("webhook mode needs webhook_url, e.g. https://bot.example.com/telegram")
            secret = self.webhook_secret.get_secret_value()
            if not re.fullmatch(r"[A-Za-z0-9_-]{16,256}", secret):
                raise ValueError(
                    "webhook mode needs webhook_secret: 16-256 characters of A-Z, a-z, 0-9, _ and -"
                )
        _host_port(self.webhook_listen)
        return self

    @field_validator("agents_chat_id")
    @classmethod
    def _check_agents_chat(cls, value: int) -> int:
        if value > 0:
            raise ValueError(
                "must be the id of the agents' supergroup, a negative number such as -1001234567890 "
                "(0 turns escalation off)"
            )
        return value

    @field_validator("agents")
    @classmethod
    def _check_agents(cls, value: list[int]) -> list[int]:
        if any(agent <= 0 for agent in value):
            raise ValueError("must list Telegram user ids (positive numbers), e.g. [12345678]")
        return value


def _host_port(value: str) -> tuple[str, int]:
    """``"host:port"`` -> (host, port); a ValueError names the expected shape."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port such as 127.0.0.1:8080, got {value!r}")
    return host.strip("[]"), int(port)


class DeliverySettings(_Section):
    """The inbox (updates stored before they are confirmed) and the sending of replies."""

    instance: str = ""  # this replica's name in inbox claims; empty = the host name
    pacing: Literal["telegram", "none"] = "telegram"  # "none" only against a sandbox
    send_retries: int = Field(default=5, ge=0, le=50)  # retries of one Bot API call (429, 5xx, network)
    max_attempts: int = Field(default=5, ge=1, le=100)  # processings of one update before it is given up
    lease_seconds: float = Field(default=60.0, gt=0)  # a claimed update is reclaimable after this
    stop_timeout: float = Field(default=8.0, gt=0)  # SIGTERM: seconds to finish in-flight updates
    max_inflight: int = Field(default=1000, ge=1, le=100_000)  # updates handled at once; more wait


class SecuritySettings(_Section):
    flood_burst: int = Field(default=8, ge=1, le=1000)  # messages a customer may send at once...
    flood_per_minute: int = Field(default=30, ge=1, le=6000)  # ...and in a sustained flow


class MetricsSettings(_Section):
    listen: str = ""  # e.g. "127.0.0.1:9108": serve /healthz and /metrics; empty = off
    max_outbox_depth: int = Field(default=1000, ge=1)  # /healthz fails above this many unsent calls

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        if value:
            _host_port(value)
        return value


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///var/helpdesk.db"
    echo: bool = False

    @model_validator(mode="after")
    def _check_url(self) -> Self:
        if "://" not in self.url:
            raise ValueError("url must be an SQLAlchemy URL such as sqlite+aiosqlite:///var/helpdesk.db")
        return self


class KbSettings(_Section):
    model: str = ""
    multilingual_model: str = "multilingual-e5-small"
    rerank_model: str = "all-mpnet-base-v2"  # re-scores the first candidates; "" = off
    rerank_max_batch: int = Field(default=8, ge=1)  # more queries at once (flat out): not re-ranked
    model_languages: list[str] = ["en"]
    index_dir: Path = Path("var/index")
    answer_threshold: float = Field(default=0.85, ge=0.0, le=1.0)  # benchmarks/thresholds.py picks
    suggest_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # the same for a question in another language than the KB's: benchmarks/languages.py picks
    cross_lingual_suggest_threshold: float = Field(default=0.35, ge=0.0, le=1.0)
    answer_margin: float = Field(default=0.1, gt=0.0, le=1.0)
    # the margin rule answers from this score up; None: from suggest_threshold
    margin_floor: float | None = Field(default=None, ge=0.0, le=1.0)
    lexical_weight: float = Field(default=0.2, ge=0.0, le=1.0)
    default_language: str = "en"
    refresh_seconds: float = Field(default=2.0, gt=0)
    batch_queries: bool = True  # concurrent searches share one encode and one index search
    batch_window_ms: float = Field(default=0.0, ge=0.0, le=100.0)  # an idle batcher waits this long
    hnsw_above: int = Field(default=20_000, ge=0)  # vectors; more than this: an HNSW index, else flat
    hnsw_ef_search: int = Field(default=128, ge=16, le=4096)  # HNSW candidates explored per query
    query_cache_size: int = Field(default=1024, ge=0, le=1_000_000)  # query vectors kept per model
    onnx_queries: bool = True  # queries on ONNX Runtime (same vectors, ~2x faster); false: torch
    int8_queries: bool = True  # those queries on an int8 copy of the graph (~2.3x faster again)
    onnx_dir: Path | None = None  # the ONNX exports' cache; None: <index_dir>/onnx

    @property
    def onnx_cache(self) -> Path:
        return self.onnx_dir if self.onnx_dir is not None else self.index_dir / "onnx"

    @field_validator("model_languages")
    @classmethod
    def _check_languages(cls, value: list[str]) -> list[str]:
        codes = [code.strip().lower() for code in value]
        wrong = [code for code in codes if not re.fullmatch(r"[a-z]{2}", code)]
        if wrong or not codes:
            raise ValueError(
                "must list the primary model's languages as two-letter ISO 639-1 codes, e.g. ['en']"
                + (f" (not {', '.join(map(repr, wrong))})" if wrong else "")
            )
        return codes

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        if self.suggest_threshold > self.answer_threshold:
            raise ValueError(
                f"suggest_threshold ({self.suggest_threshold}) must not exceed "
                f"answer_threshold ({self.answer_threshold})"
            )
        if self.cross_lingual_suggest_threshold > self.answer_threshold:
            raise ValueError(
                f"cross_lingual_suggest_threshold ({self.cross_lingual_suggest_threshold}) must not "
                f"exceed answer_threshold ({self.answer_threshold})"
            )
        floor = self.margin_floor
        if floor is not None and not self.suggest_threshold <= floor <= self.answer_threshold:
            raise ValueError(
                f"margin_floor ({floor}) must lie between suggest_threshold "
                f"({self.suggest_threshold}) and answer_threshold ({self.answer_threshold})"
            )
        return self


class HelpdeskSettings(_Section):
    business_hours: str = ""  # e.g. "Mon-Fri 09:00-18:00 Europe/Prague"; empty = always open
    escalate_after_unanswered: int = Field(default=2, ge=0, le=50)  # 0 = never offer by itself

    @field_validator("business_hours")
    @classmethod
    def _check_hours(cls, value: str) -> str:
        parse_business_hours(value)  # raises ValueError with the reason
        return value

    @property
    def hours(self) -> BusinessHours | None:
        return parse_business_hours(self.business_hours)


class IngestSettings(_Section):
    max_file_mb: float = Field(default=20.0, gt=0)
    near_duplicate_threshold: float = Field(default=0.88, gt=0.0, le=1.0)
    detect_languages: bool = True
    uploads_dir: Path = Path("var/uploads")


class PrivacySettings(_Section):
    # Conversations (and what hangs off them) last active longer ago than this are purged daily.
    retention_days: int = Field(default=0, ge=0, le=3650)  # 0 = keep; at most 10 years


class Settings(BaseSettings):
    """The whole configuration. Sections mirror ``config.example.toml``."""

    model_config = SettingsConfigDict(
        env_prefix="HELPDESK_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    telegram: TelegramSettings = TelegramSettings()
    database: DatabaseSettings = DatabaseSettings()
    kb: KbSettings = KbSettings()
    helpdesk: HelpdeskSettings = HelpdeskSettings()
    ingest: IngestSettings = IngestSettings()
    privacy: PrivacySettings = PrivacySettings()
    delivery: DeliverySettings = DeliverySettings()
    security: SecuritySettings = SecuritySettings()
    metrics: MetricsSettings = MetricsSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; environment variables override it.
        return env_settings, init_settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {loc}"
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"{source}: {loc}: {message}{shown}"


def load_settings(path: Path | str | None = None) -> Settings:
    """Load settings from ``path`` (or ``$HELPDESK_CONFIG``), then the environment."""
    chosen = path or os.environ.get(CONFIG_ENV) or None
    data = _read_toml(Path(chosen)) if chosen else {}
    source = str(chosen) if chosen else "configuration"
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
