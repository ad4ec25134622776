"""The driver's own settings, typed and checked once from the composed config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from search.core.errors import ConfigError


@dataclass(frozen=True)
class FailFast:
    """When to stop a run whose trials fail alike (search/run/failures.py decides it from these).

    Attributes:
        first: the first ``first`` trials finished by this driver all failing for one reason stop it (0: never).
        share: failures of one reason above this share of the trials finished by this driver stop it...
        min_trials: ...once at least this many have finished (a few legitimate failures early on are noise).
    """

    first: int = 3
    share: float = 0.5
    min_trials: int = 8

    def __post_init__(self) -> None:
        if self.first < 0 or not 0 < self.share <= 1 or self.min_trials < 1:
            raise ConfigError(f"fail_fast: need first >= 0, 0 < share <= 1 and min_trials >= 1, got {self}")


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
    remeasure_sessions: int | None = None  # re-timing sessions per re-timed trial; None: as the spread needs
    remeasure_quiet_s: float = 20.0  # the longest a re-timing session waits for its node to go quiet (0: no wait)

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
        quiet = cfg.get("remeasure_quiet_s", 20.0)
        if isinstance(quiet, bool) or not isinstance(quiet, (int, float)) or quiet < 0:
            raise ConfigError(f"remeasure_quiet_s must be a number of seconds >= 0, got {quiet!r}")
        sessions = cfg.get("remeasure_sessions")
        if sessions is not None:
            sessions = integer("remeasure_sessions", 2)
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
            remeasure_sessions=sessions,
            remeasure_quiet_s=float(quiet),
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
