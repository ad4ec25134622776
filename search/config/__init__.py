"""The run's configuration: composing the Hydra config (compose), the driver's typed settings (settings), and
the plugins it names, instantiated with their result schema (plugins). Imports search/core, search/runtime and
the plugin packages; never the run.

The plugins' names are imported on first use: composing a config (and refusing a mistyped override) then
costs Hydra's import, not torch's (~1.5 s of every command-line error's time).
"""

from __future__ import annotations

import importlib
from typing import Any

from search.config.compose import CONF_DIR, DEFAULT_TARGET, compose_config, known_choices, target_configs, to_container
from search.config.settings import FailFast, Settings

PLUGIN_NAMES = ("Plugins", "check_settings", "constrained", "instantiate_plugin", "load_evaluators", "load_knobs",
                "make_schema", "plugins_from_config")


def __getattr__(name: str) -> Any:
    if name in PLUGIN_NAMES:
        return getattr(importlib.import_module("search.config.plugins"), name)
    raise AttributeError(name)


__all__ = ["CONF_DIR", "DEFAULT_TARGET", "FailFast", "Settings", "compose_config", "known_choices", "target_configs",
           "to_container", *PLUGIN_NAMES]
