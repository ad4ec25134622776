"""Compose the Hydra config from command-line overrides, and the typed settings the driver uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from search.errors import ConfigError

if TYPE_CHECKING:
    from search.run.failures import FailFast

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
DEFAULT_TARGET = "cpu"


def known_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _explain(exc: Exception) -> str:
    """Hydra's message, on one line, with the known choices when a group option is unknown."""
    text = " ".join(str(exc).split())
    if text.startswith("Could not override '"):
        key = text.split("'")[1]
        return f"unknown override key '{key}' (not in the config; python -m search --help lists the common ones)"
    for group in ("target", "workload", "sampler", "space", "cluster", "evaluators"):
        if f"'{group}/" in text or f"group {group}" in text or f"{group}=" in text.split("In '")[0]:
            return f"{text.split('Available options')[0].strip()} (known {group}s: {', '.join(known_choices(group))})"
    return text


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The resolved search config; without a ``+target=`` override, the cpu target (or the first of ``targets``)."""
    overrides = list(overrides)
    names_target = any(o.lstrip("+~").startswith("target=") for o in overrides)
    names_targets = any(o.lstrip("+~").startswith("targets=") for o in overrides)
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


def _each_target(overrides: Sequence[str], names: Sequence[str]) -> dict[str, Any]:
    """Each target as ``+target=NAME`` composes it; names Hydra cannot find are one error naming all of them."""
    configs, unknown = {}, []
    for name in names:
        try:
            configs[name] = _compose([*overrides, f"+target={name}"]).target
        except ConfigError as exc:
            if f"'target/{name}'" not in str(exc):
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
        raise ConfigError(_explain(exc)) from None
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


@dataclass(frozen=True)
class Settings:
    """The driver's own settings, checked once."""

    trials: int
    run: str | None
    results_dir: Path
    seed: int
    workers: int
    batch_size: int
    resume_force: bool
    trial_timeout_s: float | None
    max_retries: int
    remeasure: bool
    cover: bool
    fail_fast: FailFast
    time_budget_s: float | None = None
    stall_trials: int | None = None
    warm_start: Path | None = None
    recovery_rungs: tuple[float, ...] = ()

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Settings:
        def integer(key: str, minimum: int) -> int:
            value = cfg[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
            return value

        def seconds(key: str) -> float | None:
            value = cfg.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"{key} must be a number of seconds > 0 or null, got {value!r}")
            return None if value is None else float(value)

        stall = cfg.get("stall_trials")
        if stall is not None:
            stall = integer("stall_trials", 1)
        run = cfg.run
        if run is not None and (not str(run).strip() or "/" in str(run) or str(run) in (".", "..")):
            raise ConfigError(f"run must be a plain folder name under {cfg.results_dir}/, got {run!r}")
        return cls(
            trials=integer("trials", 1),
            run=None if run is None else str(run),
            results_dir=Path(cfg.results_dir),
            seed=integer("seed", 0),
            workers=integer("workers", 1),
            batch_size=integer("batch_size", 1),
            resume_force=bool(cfg.resume_force),
            trial_timeout_s=seconds("trial_timeout_s"),
            max_retries=integer("max_retries", 0),
            remeasure=_boolean(cfg, "remeasure"),
            cover=_boolean(cfg, "cover"),
            fail_fast=_fail_fast(cfg.get("fail_fast") or {}),
            time_budget_s=seconds("time_budget"),
            stall_trials=stall,
            warm_start=_warm_start(cfg.get("warm_start")),
            recovery_rungs=_rungs(cfg.get("recovery_rungs")),
        )


def _rungs(value: Any) -> tuple[float, ...]:
    """Shares of the recovery epochs after which a hopeless candidate stops: each in (0, 1)."""
    if value is None:
        return ()
    shares = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if any(isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < 1 for s in shares):
        raise ConfigError(f"recovery_rungs must be a list of shares of the recovery epochs, each in (0, 1), "
                          f"got {value!r}")
    return tuple(sorted(float(s) for s in shares))


def _warm_start(value: Any) -> Path | None:
    """An earlier run folder to start from, checked here so that a typo costs nothing."""
    if value is None:
        return None
    folder = Path(str(value))
    if not (folder / "study.db").exists():
        raise ConfigError(f"warm_start={value}: no run folder there (expected {folder}/study.db)")
    return folder


def _fail_fast(node: Any) -> FailFast:
    import dataclasses

    from search.run.failures import FailFast

    values = dict(node)
    known = [f.name for f in dataclasses.fields(FailFast)]
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"fail_fast: unknown setting(s) {sorted(unknown)}; it takes {', '.join(known)}")
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"fail_fast.{key} must be a number, got {value!r}")
    return FailFast(**values)


def _boolean(cfg: DictConfig, key: str) -> bool:
    value = cfg.get(key, True)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def to_container(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
