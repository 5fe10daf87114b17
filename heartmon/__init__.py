"""heartmon: a terminal monitor for worker heartbeat health."""

__version__ = "0.1.0"
