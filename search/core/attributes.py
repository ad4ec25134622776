"""The one codec of what a run keeps of each trial in study.db: every attribute's name and its form.

study.db is the run's record (Optuna's schema, JSON attributes): the tables, the report, pick, a
resume, warm start and the samplers all read a trial through this module, and the driver writes it
through it, so a stored key is spelt once. The forms are those earlier runs wrote, so their folders
still read.

Trial user attributes: ``candidate`` (the candidate's fields and runtime, ``Candidate.to_dict``),
``baseline`` (the fp32 baseline trial), ``warm_start`` (the earlier run's trial it re-measures),
``outcome`` (what the worker measured, and why it failed), ``stopped_at_rung`` (a recovery rung stopped
it), ``error`` (a note on a trial the driver re-ran after a crash). Trial system attribute: ``refines``
(the front member whose model a refinement trial re-runs). Study user attributes: ``final:<N>`` (trial
N's figures from the re-timing phase; Optuna freezes a finished trial's own attributes) and
``stopped_early`` (why the search ended before ``trials``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search.core.candidate import Candidate
from search.core.messages import TrialResult
from search.core.optuna_private import set_trial_system_attr

CANDIDATE = "candidate"
BASELINE = "baseline"
WARM_START = "warm_start"
OUTCOME = "outcome"
STOPPED_AT_RUNG = "stopped_at_rung"
RERUN_NOTE = "error"
REFINES = "refines"
FINAL_PREFIX = "final:"
STOPPED_EARLY = "stopped_early"
RERUN_PREFIX = "re-run as"  # how a re-run note starts: such a trial does not count as finished


@dataclass
class Outcome:
    """A finished trial's measurement as stored: its metrics, node, timings, reuse, recovery trace and error."""

    metrics: dict[str, Any] = field(default_factory=dict)
    node: str | None = None
    duration_s: float | None = None
    stage_s: dict[str, float] = field(default_factory=dict)
    reuse: dict[str, Any] = field(default_factory=dict)
    recovery: list[float] = field(default_factory=list)
    error: str = ""

    @classmethod
    def of_result(cls, result: TrialResult, error: str) -> Outcome:
        """What is kept of a worker's result; ``error`` is the trial's (the driver may have found one)."""
        return cls(dict(result.metrics), result.node or None, result.duration_s, dict(result.stage_s),
                   dict(result.reuse), list(result.recovery), error)

    @classmethod
    def refused(cls, reason: str) -> Outcome:
        """A draw never built (its target cannot run it, or it builds another draw's model)."""
        return cls(duration_s=0.0, error=f"not applicable: {reason}")

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Outcome:
        data = data or {}
        return cls(dict(data.get("metrics") or {}), data.get("node"), data.get("duration_s"),
                   dict(data.get("stage_s") or {}), dict(data.get("reuse") or {}), list(data.get("recovery") or []),
                   data.get("error") or "")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Final:
    """A trial's figures from the re-timing phase (no metrics when it could not be re-timed: ``error`` says why)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    node: str | None = None
    duration_s: float | None = None
    error: str = ""
    # the timed figures of each later re-timing session of the same model (the spread between sessions)
    sessions: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of_result(cls, result: TrialResult) -> Final:
        return cls({} if result.error else dict(result.metrics), result.node or None, result.duration_s,
                   result.error or "")

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Final:
        data = data or {}
        return cls(dict(data.get("metrics") or {}), data.get("node"), data.get("duration_s"), data.get("error") or "",
                   [dict(s) for s in data.get("sessions") or []])

    def with_session(self, result: TrialResult) -> Final:
        """These figures, and another session's (nothing added when that session failed)."""
        if result.error or not self.metrics:
            return self
        return Final(self.metrics, self.node, self.duration_s, self.error, [*self.sessions, dict(result.metrics)])

    def to_json(self) -> dict[str, Any]:
        found = asdict(self)
        if not self.sessions:  # the form earlier runs wrote, where a trial was re-timed once
            del found["sessions"]
        return found


def queued(baseline: bool = False, warm_start: str | None = None) -> dict[str, Any]:
    """The user attributes of a trial queued with fixed params (``study.enqueue_trial(..., user_attrs=)``)."""
    found: dict[str, Any] = {}
    if baseline:
        found[BASELINE] = True
    if warm_start is not None:
        found[WARM_START] = warm_start
    return found


def write_candidate(trial: optuna.Trial, candidate: Candidate) -> None:
    trial.set_user_attr(CANDIDATE, candidate.to_dict())


def candidate_of(trial: FrozenTrial) -> dict[str, Any]:
    """The candidate as stored (``Candidate.from_dict`` makes it again); {} for a trial never asked for one."""
    return dict(trial.user_attrs.get(CANDIDATE) or {})


def write_outcome(trial: optuna.Trial, outcome: Outcome) -> None:
    trial.set_user_attr(OUTCOME, outcome.to_json())


def outcome_of(trial: FrozenTrial) -> Outcome:
    return Outcome.from_json(trial.user_attrs.get(OUTCOME))


def error_of(trial: FrozenTrial) -> str:
    """Why the trial failed or was refused: its outcome's error, else a re-run note ("" when none)."""
    return outcome_of(trial).error or str(trial.user_attrs.get(RERUN_NOTE) or "")


def is_baseline(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(BASELINE, False))


def warm_origin(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(WARM_START)


def mark_stopped_at_rung(trial: optuna.Trial) -> None:
    trial.set_user_attr(STOPPED_AT_RUNG, True)


def stopped_at_rung(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(STOPPED_AT_RUNG))


def was_rerun(trial: FrozenTrial) -> bool:
    """A trial the driver re-ran as a new one after a crash: its row stays, it does not count as finished."""
    return str(trial.user_attrs.get(RERUN_NOTE, "")).startswith(RERUN_PREFIX)


def rerun_note() -> tuple[str, str]:
    """(key, value) of the note on a stale trial that is re-run as a new trial."""
    return RERUN_NOTE, f"{RERUN_PREFIX} a new trial: the driver stopped while it ran"


def refines(trial: FrozenTrial) -> int | None:
    """The front member whose built model this refinement trial re-runs, or None."""
    number = trial.system_attrs.get(REFINES)
    return None if number is None else int(number)


def write_refines(study: optuna.Study, trial: optuna.Trial | FrozenTrial, number: int) -> None:
    """Mark a trial as re-running front member ``number``'s model (a system attribute: set before it is drawn)."""
    set_trial_system_attr(study, trial, REFINES, number)


def write_final(study: optuna.Study, number: int, final: Final) -> None:
    study.set_user_attr(f"{FINAL_PREFIX}{number}", final.to_json())


def finals_of(study: optuna.Study) -> dict[int, Final]:
    """The re-timing phase's figures stored so far, by trial number."""
    return {int(key[len(FINAL_PREFIX):]): Final.from_json(value) for key, value in study.user_attrs.items()
            if key.startswith(FINAL_PREFIX)}


def write_stop(study: optuna.Study, reason: str) -> None:
    study.set_user_attr(STOPPED_EARLY, reason)


def stop_of(study: optuna.Study) -> str:
    return str(study.user_attrs.get(STOPPED_EARLY, ""))
