"""heartmon's settings: one pydantic-settings model with nested sections.

Sources, strongest first: command-line flags, ``HEARTMON_*`` environment variables
(nested keys with ``__``: ``HEARTMON_DETECTOR__LATE_AFTER=3``), a TOML file
(``--config PATH``, else ``$XDG_CONFIG_HOME/heartmon/config.toml`` if it exists), the
defaults below. ``config/heartmon.example.toml`` documents every key.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from heartmon.bus.subjects import check_prefix
from heartmon.detector import Thresholds


class ConfigError(Exception):
    """Invalid configuration: the message names the key and the reason."""


_config_file: ContextVar[Path | None] = ContextVar("heartmon_config_file", default=None)
"""The TOML file that the settings being built read, set by :func:`load_settings` for
the length of one call: the file is chosen per call (``--config``), while pydantic-settings
asks the class for its sources. ``Settings()`` built directly reads no file."""


class HubSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    host: str = Field("127.0.0.1", description="address the hub binds; anything but loopback needs a token")
    port: int = Field(8787, ge=0, le=65535, description="port the hub binds; 0 picks a free one")
    max_duration_s: float = Field(60.0, gt=0, description="longest probe the hub accepts")


class MockSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    workers: str = Field("none:2,thread:2,process:2", description="the mock fleet, MODE:COUNT,...")
    interval_ms: int = Field(100, gt=0, le=3_600_000,
                             description="heartbeat interval of the mock's workers (at most an hour, as the protocol)")


class MonitorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    tick_ms: int = Field(50, gt=0, le=1000, description="how often the detector is evaluated")
    stall_ms: int = Field(250, gt=0, description="a monitor stall longer than this is excused, not blamed on workers")
    http_interval_ms: int = Field(1000, gt=0, description="poll interval of HTTP health endpoints")
    http_timeout_ms: int = Field(2000, gt=0, description="an HTTP poll slower than this is a missed beat")
    evidence_ms: int = Field(500, gt=0, description="how often local worker pids are checked for life and CPU use")
    busy_cpu_percent: float = Field(50.0, gt=0, le=100,
                                    description="a local pid above this CPU use is evidence of life")
    idle_cpu_percent: float = Field(10.0, ge=0, le=100,
                                    description="a pid that was burning CPU counts as idle again only below this")
    py_spy: str = Field("py-spy", description="the py-spy that reads where a local worker's blocked loop is "
                                              "stuck (a name or a path); empty: never run it")
    py_spy_timeout_ms: int = Field(2000, gt=0, le=60_000, description="a py-spy dump slower than this is abandoned")

    @model_validator(mode="after")
    def _hysteresis(self) -> MonitorSettings:
        if self.idle_cpu_percent > self.busy_cpu_percent:
            raise ValueError("idle_cpu_percent must not exceed busy_cpu_percent")
        return self


class SystemsSettings(BaseModel):
    """How heartmon watches systems it did not write (Celery, RQ, Inngest Connect)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    rq_poll_ms: int = Field(250, gt=0, le=60_000,
                            description="how often RQ's worker hashes are read; a beat is a change of last_heartbeat")
    inngest_heartbeat_ms: int = Field(1000, gt=0, le=3_600_000,
                                      description="heartbeat interval heartmon's Connect gateway asks workers for")
    reconnect_max_ms: int = Field(5000, gt=0, description="longest wait between reconnects to a broker")


class NatsSettings(BaseModel):
    """Heartbeats over a NATS cluster (``heartmon.bus``). Credentials belong here or in
    the environment (``HEARTMON_NATS__PASSWORD``), never on a command line, where every
    user of the machine can read them in ``ps``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    prefix: str = Field("heartmon", description="subjects are PREFIX.FLEET.HOST.WORKER.TYPE")
    fleet: str = Field("default", min_length=1, max_length=128, pattern=r"^[^/\x00-\x1f\x7f]+$",
                       description="the fleet a worker publishes in (no '/': a worker is fleet/host/name)")
    user: str | None = Field(None, description="NATS user, with password")
    password: SecretStr | None = Field(None, description="NATS password")
    token: SecretStr | None = Field(None, description="NATS token (instead of user and password)")
    tls_ca: Path | None = Field(None, description="CA file that signed the servers' certificates (tls:// servers)")
    monitor: list[str] = Field(default_factory=list,
                               description="each server's monitoring endpoint, http://HOST:PORT: its /connz "
                                           "is the evidence that a silent worker is still connected")
    connz_interval_ms: int = Field(500, gt=0, le=60_000, description="how often /connz is read")
    insecure: bool = Field(False, description="send commands on a cluster that lets anyone connect")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_prefix(value)


class RecordingSettings(BaseModel):
    """Every monitor keeps what it saw in a SQLite file, so that an incident can be
    replayed and reported on after the monitor quits."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    enabled: bool = Field(True, description="record every monitor's arrivals and judgements (--no-record: off)")
    file: Path | None = Field(None, description="record to this file (--record FILE) instead of a new file per "
                                                "run under $XDG_STATE_HOME/heartmon/recordings")
    max_mb: float = Field(1024.0, gt=0, description="the default directory's recordings together stay under this; "
                                                    "one recording that reaches it stops recording")
    max_age_days: float = Field(7.0, gt=0, description="recordings in the default directory older than this are "
                                                       "deleted when a monitor starts and every minute")
    flush_ms: int = Field(500, gt=0, le=1000, description="how often arrivals are written (a kill -9 loses at most "
                                                          "this much)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HEARTMON_", env_nested_delimiter="__", extra="forbid", nested_model_default_partial_update=True
    )
    token: str | None = Field(None, description="bearer token: required by a hub that has one, sent by clients")
    sources: list[str] = Field(default_factory=list,
                               description="what the monitor watches: "
                                           "ws://HOST:PORT hubs, [NAME=]http(s)://… endpoints, "
                                           "celery+redis://, rq+redis:// and inngest:// systems")
    hub: HubSettings = HubSettings()
    mock: MockSettings = MockSettings()
    monitor: MonitorSettings = MonitorSettings()
    systems: SystemsSettings = SystemsSettings()
    detector: Thresholds = Thresholds()
    nats: NatsSettings = NatsSettings()
    recording: RecordingSettings = RecordingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=_config_file.get())


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "heartmon" / "config.toml"


def load_settings(config: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Builds the settings from every source; raises ConfigError with a readable reason."""
    path = config if config is not None else default_config_path()
    if config is not None and not config.is_file():
        raise ConfigError(f"config file {config} does not exist")
    reading = _config_file.set(path)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors(include_url=False))
        raise ConfigError(f"invalid configuration: {problems}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid configuration: {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition; a Latin-1 file is not TOML
        raise ConfigError(f"invalid configuration: {path} is not UTF-8 text "
                          f"(byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    except SettingsError as exc:  # e.g. HEARTMON_SOURCES that is not a JSON list
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(f"invalid configuration: {exc}{cause}") from None
    finally:
        _config_file.reset(reading)


def _describe(error: ErrorDetails) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "settings"
    message = error["msg"].removeprefix("Value error, ")
    if "input" in error and not isinstance(error["input"], dict):
        return f"{key}: {message} (got {error['input']!r})"
    return f"{key}: {message}"
