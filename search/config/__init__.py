"""The run's configuration: composing the Hydra config (compose), the driver's typed settings (settings), and
the plugins it names, instantiated with their result schema (plugins). Imports search/core, search/runtime and
the plugin packages; never the run."""

from search.config.compose import CONF_DIR, DEFAULT_TARGET, compose_config, known_choices, target_configs, to_container
from search.config.plugins import (Plugins, check_settings, instantiate_plugin, load_evaluators, load_knobs,
                                   make_schema, plugins_from_config)
from search.config.settings import FailFast, Settings

__all__ = ["CONF_DIR", "DEFAULT_TARGET", "FailFast", "Plugins", "Settings", "check_settings", "compose_config",
           "instantiate_plugin", "known_choices", "load_evaluators", "load_knobs", "make_schema",
           "plugins_from_config", "target_configs", "to_container"]
