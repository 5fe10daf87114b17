"""Settings models (pydantic-settings) and the documented example config."""
