"""The typed messages across the Ray wall: a ``TrialRequest`` goes to a worker, a ``TrialResult`` comes back.

The driver (search/run/) and the worker (search/trial/) share nothing else: Ray pickles these two
dataclasses, so each side reads typed fields instead of string keys, and a result is decoded once,
where it arrives. What is kept of a result in study.db is search/core/attributes.py's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from search.core.candidate import Candidate


@dataclass(frozen=True)
class TrialRequest:
    """What a worker builds and measures.

    Attributes:
        candidate: the knobs' fields and the runtime settings they composed.
        target: the candidate's target, as Hydra composed its config (``Target.from_config`` reads it).
        seed: the run's one seed: the same settings build the same model.
        plan: the recovery rungs a training knob may stop at (a ``search.trial.recovery.RungPlan``), or None.
        model_bytes: a finished trial's model for the re-timing phase: measured again, not built (empty: build).
    """

    candidate: Candidate
    target: dict[str, Any]
    seed: int
    plan: Any = None
    model_bytes: bytes = b""


@dataclass
class TrialResult:
    """What a worker returns: metrics, the model, and where and how long it ran.

    A failing candidate is a result with ``error`` set, never an exception: the search goes on.
    """

    metrics: dict[str, Any] = field(default_factory=dict)
    model_bytes: bytes = b""
    node: str = ""
    machine: dict[str, Any] = field(default_factory=dict)  # the node's, for the cards (search/run/manifest.py)
    duration_s: float | None = None  # None: the task never returned (its worker died, it was cancelled)
    stage_s: dict[str, float] = field(default_factory=dict)
    reuse: dict[str, Any] = field(default_factory=dict)  # artifacts the run's store served, and the time saved
    recovery: list[float] = field(default_factory=list)  # best validation score after each recovery epoch
    stopped: bool = False  # a recovery rung stopped it (``error`` says why): a PRUNED trial, not a failed one
    # the candidate cannot take a setting (NotApplicable, ``error`` says why): PRUNED and re-asked, never a failure
    not_applicable: bool = False
    error: str = ""

    @classmethod
    def failed(cls, error: str) -> TrialResult:
        """The result of a task that could not run or whose worker died: its reason, nothing measured."""
        return cls(error=error)
