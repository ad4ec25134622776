"""Compose the Hydra config from command-line overrides: the cpu target unless one is given, one line with a
did-you-mean for a mistyped override, and the config resolved before it crosses to Ray."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from search.core.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # search/config/compose.py -> the checkout's conf/
DEFAULT_TARGET = "cpu"


def known_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


class _UnknownOption(ConfigError):
    """A config group option Hydra cannot find (``sampler=tpee``): which group, which option."""

    def __init__(self, message: str, group: str, option: str) -> None:
        super().__init__(message)
        self.group, self.option = group, option


def _explain(exc: Exception, overrides: Sequence[str]) -> ConfigError:
    """Hydra's message on one line: a near miss of a key or option says what was meant, a group outside
    the defaults list says to add it with ``+``, an unknown option lists the known ones."""
    raw = str(exc)
    text = " ".join(raw.split())
    if text.startswith("Could not override '") and "No match in the defaults list" in text:
        key, added = text.split("'")[1], text.rsplit(" use ", 1)[-1]
        return ConfigError(f"{added.lstrip('+')}: use {added} ({key} is not in the defaults list, "
                           "so it is added with +)")
    if text.startswith(("Could not override '", "Could not delete from config. '")):
        key = text.split("'")[1]
        hint = _near_key(key, overrides)
        if hint:
            return ConfigError(f"unknown override key '{key}' ({hint}); python -m search --help lists the common ones")
        return ConfigError(f"unknown override key '{key}' (not in the config; python -m search --help lists the "
                           "common ones)")
    if "Could not find '" in text:
        return _unknown_option(raw, text)
    for group in ("target", "workload", "sampler", "space", "cluster", "evaluators"):
        if f"'{group}/" in text or f"group {group}" in text or f"{group}=" in text.split("In '")[0]:
            said = text.split("Available options")[0].split(" Config search path:")[0].strip()
            return ConfigError(f"{said} (known {group}s: {', '.join(known_choices(group))})")
    return ConfigError(text)


def _unknown_option(raw: str, text: str) -> ConfigError:
    """``sampler=tpee``: the closest of the group's options, and all of them as Hydra lists them (search path too)."""
    group, _, option = text.split("Could not find '")[1].split("'")[0].rpartition("/")
    where = text.split("'")[1] if text.startswith("In '") else "search"
    listed = raw.split(f"Available options in '{group}':")[1:]
    choices = [c.strip() for c in listed[0].split("Config search path:")[0].split()] if listed else []
    choices = choices or known_choices(group)
    close = difflib.get_close_matches(option, choices, n=1)
    meant = f"did you mean {close[0]}? " if close else ""
    known = f"known {group}s: {', '.join(choices)}" if choices else f"no {group} options found"
    inside = "" if where == "search" else f"{where}'s defaults name "
    return _UnknownOption(f"{inside}unknown {group} '{option}' ({meant}{known})", group, option)


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The resolved search config; without a ``+target=`` override, the cpu target (or the first of ``targets``)."""
    overrides = [_constraint_added(o) for o in overrides]
    names_target = any(_key_of(o) == "target" for o in overrides)
    names_targets = any(_key_of(o) == "targets" for o in overrides)
    if names_target and names_targets:
        raise ConfigError("give either +target=NAME (one target) or targets=[A,B] (a study across several), not both")
    if not names_target:
        overrides.append(f"+target={DEFAULT_TARGET}")
    cfg = _compose(overrides)
    names = cfg.get("targets")
    if names:
        _check_target_names(names)
        # each target composed by Hydra like +target=NAME: found on hydra.searchpath, with its defaults
        others = [o for o in overrides if not o.lstrip("+~").startswith(("target=", "targets="))]
        configs = _each_target(others, names)
        with open_dict(cfg):
            cfg.target = configs[names[0]]
            cfg.target_configs = configs
    return cfg


def _constraint_added(override: str) -> str:
    """``constraints.max_latency_ms=2`` names a column conf/search.yaml cannot list beforehand: added (``++``)."""
    return f"++{override}" if override.startswith("constraints.") and "=" in override else override


def _each_target(overrides: Sequence[str], names: Sequence[str]) -> dict[str, Any]:
    """Each target as ``+target=NAME`` composes it; names Hydra cannot find are one error naming all of them."""
    configs, unknown = {}, []
    for name in names:
        try:
            configs[name] = _compose([*overrides, f"+target={name}"]).target
        except _UnknownOption as exc:
            if (exc.group, exc.option) != ("target", name):
                raise
            unknown.append(name)
    if unknown:
        raise ConfigError(f"unknown target(s) {unknown} (known targets: {', '.join(known_choices('target'))})")
    return configs


def _compose(overrides: Sequence[str]) -> DictConfig:
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name="search", overrides=list(overrides))
        OmegaConf.resolve(cfg)  # ${...} must be resolved before the config crosses to Ray
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise _explain(exc, overrides) from None
    return cfg


def _check_target_names(names: Any) -> None:
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"targets must be a list of target names, e.g. targets=[cpu,cpu_1t]; got {names!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"targets lists a target twice: {list(names)}")


def target_configs(cfg: DictConfig) -> list[dict[str, Any]]:
    """The study's targets: each of ``targets=[a,b]`` as Hydra composed it, else the one target."""
    if cfg.get("target_configs"):
        return [to_container(c) for c in cfg.target_configs.values()]
    return [to_container(cfg.target)]


def _near_key(key: str, overrides: Sequence[str]) -> str:
    """``did you mean trials?`` for a near miss of a key of the config composed without the bad override;
    for a nested key with no near miss, the keys its parent has; "" when neither can be said."""
    tree = _tree_without(key, overrides)
    found: list[str] = []
    for part in key.split("."):
        if not isinstance(tree, dict):
            return ""
        if part not in tree:
            names = [str(k) for k in tree if not str(k).startswith("_")]  # _target_ is not a setting
            close = difflib.get_close_matches(part, names, n=1)
            if not close:
                return f"{'.'.join(found)} has {', '.join(names)}" if found else ""
            part = close[0]
        found.append(part)
        tree = tree[part]
    return f"did you mean {'.'.join(found)}?"


def _tree_without(key: str, overrides: Sequence[str]) -> Any:
    """The config (unresolved, as plain containers) without the overrides of ``key`` or of any other
    unknown key; None if it does not compose even so."""
    others = [o for o in overrides if _key_of(o) != key]
    for _ in range(len(others) + 1):
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
                return OmegaConf.to_container(compose(config_name="search", overrides=others), resolve=False)
        except (HydraException, OmegaConfBaseException, ValueError) as exc:
            text = " ".join(str(exc).split())
            if not text.startswith(("Could not override '", "Could not delete from config. '")):
                return None
            bad = text.split("'")[1]
            others = [o for o in others if _key_of(o) != bad]
    return None


def _key_of(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def to_container(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
