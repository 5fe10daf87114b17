"""Settings models (pydantic-settings) and the documented example config."""

from heartmon.config.settings import ConfigError, NatsSettings, Settings, load_settings

__all__ = ["ConfigError", "NatsSettings", "Settings", "load_settings"]
