"""The Optuna study in the run folder: create or resume, the baseline first, stale trials re-run."""

from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import optuna
from sqlalchemy import event
from optuna.trial import FrozenTrial, TrialState

from search.core import attributes
from search.core.attributes import Final, Outcome
from search.core.errors import ConfigError
from search.core.messages import TrialResult
from search.core.optuna_private import set_trial_user_attr, storage_of
from search.strategy.mirrored_storage import MirroredStorage

STUDY_NAME = "search"


def _fast_commits(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def batched(study: optuna.Study) -> contextlib.AbstractContextManager:
    """The study's writes inside go to study.db in one transaction, where its storage can (``MirroredStorage``)."""
    storage = storage_of(study)
    return storage.batch() if isinstance(storage, MirroredStorage) else contextlib.nullcontext()


def sqlite_storage(path: Path) -> MirroredStorage:
    """The run's study.db in WAL mode with synchronous=NORMAL, read from memory (``MirroredStorage``).

    The default (rollback journal, fsync on every commit) cost ~4 ms per commit here. In WAL mode a
    commit survives a killed driver (it is in the log the next open replays); only a power cut can
    lose the last commits. The log is merged into study.db when the driver closes it.
    """
    db = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    event.listen(db.engine, "connect", _fast_commits)
    db.engine.dispose()  # connections opened while creating the schema predate the listener
    return MirroredStorage(db)


def open_study(run_dir: Path, objectives: Sequence[tuple[str, str]], sampler: optuna.samplers.BaseSampler,
               baseline: dict[str, Any], cover: Sequence[dict[str, Any]] = (),
               warm: Sequence[tuple[dict[str, Any], str]] = ()) -> optuna.Study:
    """Create or resume the run's study; a new one gets the ``baseline`` params as its first
    trial, then the ``cover`` trials (every declared mode once), then the ``warm`` start's
    (params, where they come from), then what the sampler proposes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=sqlite_storage(run_dir / "study.db"), sampler=sampler, load_if_exists=True,
        directions=[direction for _, direction in objectives],
    )
    with warnings.catch_warnings():  # experimental since Optuna 3.2, and what the dashboard shows
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric for metric, _ in objectives])
    if not study.get_trials(deepcopy=False):
        # The unoptimized fp32 model, measured like any candidate: the row every ratio is against.
        study.enqueue_trial(baseline, user_attrs=attributes.queued(baseline=True))
        for fixed in cover:
            study.enqueue_trial(fixed)
        for fixed, origin in warm:
            study.enqueue_trial(fixed, user_attrs=attributes.queued(warm_start=origin))
    return study


def check_existing(run_dir: Path, objectives: Sequence[tuple[str, str]]) -> None:
    """A study.db already in the folder must be this tool's study with these objectives: a corrupt file
    or another program's study is refused (ConfigError) before anything in the folder is written."""
    db = run_dir / "study.db"
    if not db.exists():
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        found = {s.study_name: s for s in optuna.get_all_study_summaries(f"sqlite:///{db.resolve()}")}
    except Exception as exc:  # sqlalchemy's DatabaseError on a file that is no SQLite, Optuna's on another schema
        raise ConfigError(f"{db} is not an Optuna study this tool can read ({type(exc).__name__}); "
                          "use another run=NAME or move the file away") from None
    if STUDY_NAME not in found:
        raise ConfigError(f"{db} holds no study named {STUDY_NAME!r} (it holds {sorted(found) or 'none'}): not a run "
                          "of this tool; use another run=NAME")
    directions = [d.name.lower() for d in found[STUDY_NAME].directions]
    wanted = [d for _, d in objectives]
    if directions != wanted:
        raise ConfigError(f"{db} was made for {len(directions)} objective(s) ({', '.join(directions)}), this run has "
                          f"{len(wanted)} ({', '.join(f'{m} {d}' for m, d in objectives)}); use another run=NAME")


def load_run_study(run_dir: Path) -> optuna.Study:
    """A finished (or running) run's study, read from its folder, for the report and rebuilds."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{(run_dir / 'study.db').resolve()}")


def requeue_stale(study: optuna.Study) -> int:
    """Trials left RUNNING by a driver that died: re-run their parameters, mark the old ones failed."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.enqueue_trial(trial.params, user_attrs=attributes.queued(baseline=attributes.is_baseline(trial)))
        set_trial_user_attr(study, trial, *attributes.rerun_note())
        study.tell(trial.number, state=TrialState.FAIL)
    return len(stale)


def tried(trial: FrozenTrial) -> bool:
    """Whether a finished trial counts towards ``trials``: it completed, failed, or a recovery rung stopped it.
    A draw re-asked before or during its build (its target cannot run it, it repeats a trial, a setting does
    not apply to the model) is PRUNED and does not count: nothing was measured."""
    return trial.state in (TrialState.COMPLETE, TrialState.FAIL) or attributes.stopped_at_rung(trial)


def finished(trials: Sequence[FrozenTrial]) -> tuple[int, int]:
    """(finished, failed) trials, not counting stale trials that were re-run."""
    done = failed = 0
    for trial in trials:
        if not tried(trial) or attributes.was_rerun(trial):
            continue
        done += 1
        failed += trial.state == TrialState.FAIL
    return done, failed


def record(study: optuna.Study, trial: optuna.Trial, result: TrialResult, objectives: Sequence[tuple[str, str]],
           constraints: Mapping[str, float] | None = None) -> tuple[str, FrozenTrial]:
    """Tell the study a worker's result; (why the trial failed or "" when it did not, the trial as stored).

    The outcome is one user attribute (search/core/attributes.py), written to study.db with the state and
    values in one transaction. The trial comes back from ``tell``. ``constraints`` (a completed trial's misses of
    the run's limits, search/core/constraints.py) are set on it first: Optuna's samplers read them.
    """
    with batched(study):
        return _record(study, trial, result, objectives, constraints or {})


def _record(study: optuna.Study, trial: optuna.Trial, result: TrialResult,
            objectives: Sequence[tuple[str, str]], constraints: Mapping[str, float]) -> tuple[str, FrozenTrial]:
    error = result.error
    if result.not_applicable:  # the build found a setting this model cannot take: re-asked, not a failure
        attributes.write_outcome(trial, Outcome.of_result(result, f"{error}; re-asked (nothing was measured)"))
        return "", study.tell(trial, state=TrialState.PRUNED)
    values = [result.metrics.get(metric) for metric, _ in objectives]  # a timed-out or crashed trial has none
    if not error and any(v is None or not math.isfinite(float(v)) for v in values):
        error = f"non-finite objective values {values}: recorded as failed, not told to the sampler"
    attributes.write_outcome(trial, Outcome.of_result(result, error))
    if result.stopped:  # a recovery rung stopped it: PRUNED with the reason, tried but not failed
        attributes.mark_stopped_at_rung(trial)
        return "", study.tell(trial, state=TrialState.PRUNED)
    if error:
        return error, study.tell(trial, state=TrialState.FAIL)
    for key, miss in constraints.items():
        trial.set_constraint(key, miss)
    return "", study.tell(trial, [float(v) for v in values])


def skip(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """A drawn candidate its target cannot run: kept with the reason as PRUNED, never built.

    PRUNED, not FAIL: it does not count towards ``trials`` (nothing was tried), and samplers
    learn nothing from it either way.
    """
    attributes.write_outcome(trial, Outcome.refused(reason))
    study.tell(trial, state=TrialState.PRUNED)


def store_final(study: optuna.Study, number: int, result: TrialResult, first: Final | None = None) -> Final:
    """Keeps the re-timing phase's figures for a trial in study.db (one commit) and returns them: ``result``'s,
    or, given the ``first`` session's, those with ``result`` as a later session."""
    final = Final.of_result(result) if first is None else first.with_session(result)
    attributes.write_final(study, number, final)
    return final
