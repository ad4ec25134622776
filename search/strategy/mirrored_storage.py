"""The study's storage: every read from memory, every write to memory and then to study.db.

Optuna's RDBStorage queries the database on each of the ~20 storage calls an ask and a tell make, and
writes each param, attribute and value in a transaction of its own: about 20 ms of the driver's time per
trial here (bench/overhead.py), against 4 ms for the same calls in memory. The driver is the only writer
of its run's study.db (one driver per run folder holds the lock; workers never touch the study), so
memory can answer every read.

study.db stays Optuna's own schema, written through Optuna's own table models, so ``optuna.load_study``
and optuna-dashboard read it while the run goes on. A write is in the file when the call that made it
returns; inside ``batch()``, all of a batch's writes go in one transaction when it ends (an ask with its
params and attributes, a tell with its outcome).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import threading
from collections.abc import Container, Iterator, Sequence
from typing import Any

from optuna import distributions
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import insert, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from search.core import optuna_private as private
from search.core.optuna_private import FrozenStudy
from search.core.optuna_private import rdb_models as models


@dataclasses.dataclass
class _Unwritten:
    """What of one trial the file does not hold yet."""

    new: bool = False
    params: set[str] = dataclasses.field(default_factory=set)
    user_attrs: set[str] = dataclasses.field(default_factory=set)
    system_attrs: set[str] = dataclasses.field(default_factory=set)
    steps: set[int] = dataclasses.field(default_factory=set)
    state: bool = False  # the state, its datetimes and the values


class MirroredStorage(BaseStorage):
    """An Optuna storage that reads from memory and writes to memory and to a SQLite ``RDBStorage``.

    Opening it loads what the file holds (a resumed run). Nothing else may write that file while it is
    open: what another process adds is not seen, and trial numbers would clash.
    """

    def __init__(self, db: RDBStorage) -> None:
        if db.engine.name != "sqlite":
            raise ValueError(f"a mirrored study is kept in SQLite, not {db.engine.name}")
        self._db = db
        self._memory = InMemoryStorage()
        self._lock = threading.RLock()
        self._db_study_ids: dict[int, int] = {}  # memory's study id -> the file's
        self._db_trial_ids: dict[int, int] = {}
        self._study_of: dict[int, int] = {}  # trial id -> its study's id
        self._distributions: dict[int, dict[str, BaseDistribution]] = {}  # per study: what each param was drawn from
        self._unwritten: dict[int, _Unwritten] = {}  # by trial id, in memory but not in the file yet
        self._batches = 0
        self._load()

    def _load(self) -> None:
        for study in self._db.get_all_studies():
            study_id = self._memory.create_new_study(study.directions, study.study_name)
            self._db_study_ids[study_id] = private.study_id(study)
            for key, value in study.user_attrs.items():
                self._memory.set_study_user_attr(study_id, key, value)
            for key, value in study.system_attrs.items():
                self._memory.set_study_system_attr(study_id, key, value)
            self._distributions[study_id] = {}
            trials = self._db.get_all_trials(private.study_id(study), deepcopy=False)
            for trial in sorted(trials, key=lambda t: t.number):
                trial_id = self._memory.create_new_trial(study_id, template_trial=trial)
                if self._memory.get_trial(trial_id).number != trial.number:
                    raise ValueError(f"{self._db.url}: study {study.study_name!r} has a gap in its trial numbers")
                self._db_trial_ids[trial_id] = private.trial_id(trial)
                self._study_of[trial_id] = study_id
                self._distributions[study_id].update(trial.distributions)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """The writes made inside go to the file in one transaction, at the end (raised or not)."""
        with self._lock:
            self._batches += 1
            try:
                yield
            finally:
                self._batches -= 1
                self._write_unless_batching()

    # --- studies: rare, written at once ---

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        with self._lock:
            study_id = self._memory.create_new_study(directions, study_name)
            name = self._memory.get_study_name_from_id(study_id)
            self._db_study_ids[study_id] = self._db.create_new_study(directions, name)
            self._distributions[study_id] = {}
            return study_id

    def delete_study(self, study_id: int) -> None:
        with self._lock:
            self._memory.delete_study(study_id)
            self._db.delete_study(self._db_study_ids.pop(study_id))
            for trial_id in [t for t, s in self._study_of.items() if s == study_id]:
                del self._study_of[trial_id]
                self._db_trial_ids.pop(trial_id, None)
                self._unwritten.pop(trial_id, None)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        with self._lock:
            self._memory.set_study_user_attr(study_id, key, value)
            self._db.set_study_user_attr(self._db_study_ids[study_id], key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        with self._lock:
            self._memory.set_study_system_attr(study_id, key, value)
            self._db.set_study_system_attr(self._db_study_ids[study_id], key, value)

    # --- trials: memory first, then the file ---

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        with self._lock:
            trial_id = self._memory.create_new_trial(study_id, template_trial)
            self._study_of[trial_id] = study_id
            if template_trial is not None:
                self._distributions[study_id].update(template_trial.distributions)
            self._mark(trial_id).new = True
            self._write_unless_batching()
            return trial_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        with self._lock:
            # a finished trial is refused first, as Optuna's storages do (Optuna's own storage tests check the order)
            self.check_trial_is_updatable(trial_id, self._memory.get_trial(trial_id).state)
            drawn = self._distributions[self._study_of[trial_id]]
            if param_name in drawn:  # memory knows only the distributions of the trials it made, not those loaded
                distributions.check_distribution_compatibility(drawn[param_name], distribution)
            self._memory.set_trial_param(trial_id, param_name, param_value_internal, distribution)
            drawn.setdefault(param_name, distribution)
            self._mark(trial_id).params.add(param_name)
            self._write_unless_batching()

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        with self._lock:
            changed = self._memory.set_trial_state_values(trial_id, state, values)
            if changed:
                self._mark(trial_id).state = True
                self._write_unless_batching()
            return changed

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        with self._lock:
            self._memory.set_trial_intermediate_value(trial_id, step, intermediate_value)
            self._mark(trial_id).steps.add(step)
            self._write_unless_batching()

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._lock:
            self._memory.set_trial_user_attr(trial_id, key, value)
            self._mark(trial_id).user_attrs.add(key)
            self._write_unless_batching()

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._lock:
            self._memory.set_trial_system_attr(trial_id, key, value)
            self._mark(trial_id).system_attrs.add(key)
            self._write_unless_batching()

    def _mark(self, trial_id: int) -> _Unwritten:
        return self._unwritten.setdefault(trial_id, _Unwritten())

    # --- writing to the file ---

    def _write_unless_batching(self) -> None:
        if self._batches or not self._unwritten:
            return
        created: dict[int, int] = {}
        with private.rdb_session(self._db.scoped_session) as session:
            # In creation order: the file numbers a study's trials as memory does.
            for trial_id in sorted(self._unwritten):
                created.update(self._write_trial(session, trial_id, self._unwritten[trial_id]))
        # Only once committed: should the transaction fail, all of it stays unwritten for the next write.
        self._unwritten.clear()
        self._db_trial_ids.update(created)

    def _write_trial(self, session: Session, trial_id: int, parts: _Unwritten) -> dict[int, int]:
        """One trial's unwritten parts; {memory id: file id} when the trial is new to the file."""
        trial = self._memory.get_trial(trial_id)  # memory's own object, read only
        if parts.new:
            study_id = self._db_study_ids[self._study_of[trial_id]]
            db_id = session.execute(insert(_TRIALS).values(
                number=trial.number, study_id=study_id, state=trial.state, **_datetimes(trial))).inserted_primary_key[0]
            parts = _Unwritten(new=True, params=set(trial.params), user_attrs=set(trial.user_attrs),
                               system_attrs=set(trial.system_attrs), steps=set(trial.intermediate_values), state=True)
        else:
            db_id = self._db_trial_ids[trial_id]
            if parts.state:
                session.execute(update(_TRIALS).where(_TRIALS.c.trial_id == db_id).values(
                    state=trial.state, **_datetimes(trial)))
        _write_rows(session, db_id, trial, parts)
        return {trial_id: db_id} if parts.new else {}

    # --- reads: memory ---

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._memory.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._memory.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._memory.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._memory.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._memory.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._memory.get_all_studies()

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._memory.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self._memory.get_trial_number_from_id(trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self._memory.get_trial_param(trial_id, param_name)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._memory.get_best_trial(study_id)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._memory.get_trial(trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._memory.get_all_trials(study_id, deepcopy, states)


_TRIALS = models.TrialModel.__table__  # the table, not the ORM class: its datetime columns are named as stored


def _datetimes(trial: FrozenTrial) -> dict[str, datetime.datetime | None]:
    """A trial's datetimes as Optuna's table keeps them: naive UTC."""
    def utc(moment: datetime.datetime | None) -> datetime.datetime | None:
        return None if moment is None else moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return {"datetime_start": utc(trial.datetime_start), "datetime_complete": utc(trial.datetime_complete)}


def _upsert(session: Session, model: Any, keys: Sequence[str], rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    statement = sqlite_insert(model.__table__)
    value_columns = [c for c in rows[0] if c not in keys]
    session.execute(statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: getattr(statement.excluded, c) for c in value_columns}), rows)


def _write_rows(session: Session, db_id: int, trial: FrozenTrial, parts: _Unwritten) -> None:
    """The params, attributes, intermediate values and values ``parts`` names, as Optuna's tables hold them."""
    if parts.params:
        session.execute(insert(models.TrialParamModel.__table__), [
            {"trial_id": db_id, "param_name": name,
             "param_value": trial.distributions[name].to_internal_repr(trial.params[name]),
             "distribution_json": distributions.distribution_to_json(trial.distributions[name])}
            for name in sorted(parts.params)])
    for model, attrs, names in ((models.TrialUserAttributeModel, trial.user_attrs, parts.user_attrs),
                                (models.TrialSystemAttributeModel, trial.system_attrs, parts.system_attrs)):
        _upsert(session, model, ("trial_id", "key"),
                [{"trial_id": db_id, "key": key, "value_json": json.dumps(attrs[key])} for key in sorted(names)])
    _upsert(session, models.TrialIntermediateValueModel, ("trial_id", "step"),
            [_step_row(db_id, step, trial.intermediate_values[step]) for step in sorted(parts.steps)])
    if parts.state and trial.values is not None:
        _upsert(session, models.TrialValueModel, ("trial_id", "objective"),
                [_value_row(db_id, objective, value) for objective, value in enumerate(trial.values)])


def _step_row(db_id: int, step: int, value: float) -> dict[str, Any]:
    stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
    return {"trial_id": db_id, "step": step, "intermediate_value": stored, "intermediate_value_type": kind}


def _value_row(db_id: int, objective: int, value: float) -> dict[str, Any]:
    stored, kind = models.TrialValueModel.value_to_stored_repr(value)  # infinities as Optuna stores them
    return {"trial_id": db_id, "objective": objective, "value": stored, "value_type": kind}
