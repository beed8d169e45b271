"""Configuration: one validated model, layered sources, secrets, hot reload.

`load_settings()` merges defaults < file < App Configuration < environment <
flags and validates once; `ConfigManager` keeps a running process's
configuration and swaps it at batch boundaries.
"""

from __future__ import annotations

from paymetrics.config.loader import ConfigError, LoadedConfig, load_settings
from paymetrics.config.logs import setup_logging
from paymetrics.config.manager import ConfigManager
from paymetrics.config.model import Settings

__all__ = [
    "ConfigError",
    "ConfigManager",
    "LoadedConfig",
    "Settings",
    "load_settings",
    "setup_logging",
]
