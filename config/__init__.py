"""Settings models (pydantic-settings) and the documented example config."""

from heartmon.config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
