"""An optional copy of a run in MLflow, where users already look: a parent run per run folder, a child per trial.

Off unless ``tracking.uri`` is set; mlflow is imported only then (``pip install mlflow-skinny``, no dependency of
the package). A child holds its trial's trials.csv row (``trial_row``): the knob fields as params, the numeric
result columns as metrics, state, error and the other values as tags. It is logged when the driver records the
trial; at the end, the front members are tagged ``optsearch.pareto=true``, re-timed trials get their re-timed
figures (step 1), the trials the store missed are logged, and the parent run gets the front's models and cards,
the tables, the page and the config. A resumed run finds its parent by ``optsearch.run_dir`` and its children by
``optsearch.trial``, so nothing is logged twice.

A scheme-less uri (``mlruns``, relative to where the command runs) is a SQLite store in that folder
(``mlflow.db``, artifacts in ``mlartifacts/``): MLflow 3.17 refuses to write a plain-folder store unless
``MLFLOW_ALLOW_FILE_STORE=true``. A new experiment in a SQLite store keeps its artifacts beside the database
(MLflow's default, ``./mlruns``, lands wherever the command runs). Other URIs go to MLflow as given.

Nothing leaves the machine with a local store. MLflow 3's usage telemetry (mlflow/telemetry/, 3.17.2):
``import mlflow`` makes a client that, on the first tracked call (create_run, log_batch), fetches a config from
MLflow's servers and posts records; its switch is ``MLFLOW_DISABLE_TELEMETRY``. The switch is set only while
mlflow is imported here and ``set_telemetry_client()`` runs under it, so this process keeps no client (not even
one an earlier import made); os.environ is put back at once. ``MLFLOW_CONFIGURE_LOGGING=false``, set alike,
keeps mlflow's import off this process's loggers; the sink's calls run with mlflow's and alembic's loggers
silenced and warnings ignored, and a store that fails mid-run is said in one line while the search goes on.

Cost, on this 2-core VM with mlflow-skinny 3.17.2 (median of 50 trials of 42 columns; a trial is a child's
create, one batch of params and metrics, its close): 23-29 ms with the SQLite store, 9-13 ms with a file store
at a load of about 1.6; 110-170 ms and 18-36 ms while other jobs kept the load near 6. Once at start, importing
mlflow and creating a new SQLite store's tables took about 3 s (1 s for a file store).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from numbers import Real
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from optuna.trial import FrozenTrial, TrialState

from search.core.attributes import stopped_at_rung, was_rerun
from search.core.errors import ConfigError
from search.results.intervals import widened_rows
from search.results.tables import trial_row
from search.run.state import Search, say

INSTALL = "pip install mlflow-skinny"
PARENT = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a child under its parent
RUN_DIR, TRIAL, PARETO = "optsearch.run_dir", "optsearch.trial", "optsearch.pareto"
SEARCH_STEP, FINAL_STEP = 0, 1  # a metric's step: as measured during the search; re-timed after it
STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}
RUN_FILES = ("trials.csv", "pareto.csv", "pareto.html", "config.yaml")
TAIL_METRICS = ("duration_s", "store_hits", "build_s_saved")
TAIL_TAGS = ("node", "baseline", "final")
NOISY_LOGGERS = ("mlflow", "alembic")
# MLflow's own switches, set only while it is imported: no telemetry client, this process's logging left alone
IMPORT_SWITCHES = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_CONFIGURE_LOGGING": "false"}
TAG_CHARS = 5000  # of an error message kept in a tag (MLflow takes 8000)


@dataclass(frozen=True)
class TrackingSettings:
    """Where the run is copied to.

    Attributes:
        uri: a folder (a SQLite store inside it) or any MLflow tracking URI.
        experiment: the MLflow experiment; None: ``optsearch-<workload>``.
    """

    uri: str
    experiment: str | None = None

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> TrackingSettings | None:
        """The ``tracking`` section; None when it is off (no uri)."""
        values = dict(node or {})
        unknown = sorted(set(values) - {"uri", "experiment"})
        if unknown:
            raise ConfigError(f"tracking: unknown setting(s) {unknown}; it takes uri and experiment")
        for key in ("uri", "experiment"):
            value = values.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"tracking.{key} must be a text or null, got {value!r}")
        return None if values.get("uri") is None else cls(values["uri"], values.get("experiment"))

    @property
    def folder(self) -> Path | None:
        """The folder a scheme-less uri names (None for a URI)."""
        return None if urlparse(self.uri).scheme else Path(self.uri).resolve()

    @property
    def store_uri(self) -> str:
        return f"sqlite:///{self.folder / 'mlflow.db'}" if self.folder else self.uri

    @property
    def artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts: beside a SQLite database; None: the store decides."""
        prefix = "sqlite:///"
        if not self.store_uri.startswith(prefix):
            return None
        return str(Path(self.store_uri[len(prefix):]).resolve().parent / "mlartifacts")


def check_tracking(config: Mapping[str, Any]) -> None:
    """Refuse a run whose tracking cannot work, before its folder is written: bad settings, no mlflow,
    a store MLflow cannot open."""
    settings = TrackingSettings.from_config(config.get("tracking"))
    if settings is not None:
        _client(settings)


def open_tracking(search: Search, workload_name: str) -> TrackingSink | None:
    """The run's sink (its parent run found again or made), or None when tracking is off."""
    settings = TrackingSettings.from_config(search.config.get("tracking"))
    if settings is None:
        return None
    client, mlflow = _client(settings), _import_mlflow()
    name = settings.experiment or f"optsearch-{workload_name}"
    try:
        with _quiet():
            experiment = _experiment(client, name, settings.artifact_location)
            parent, resumed = _parent(client, experiment, search, workload_name)
            children = _children(client, experiment, parent)
    except ConfigError:
        raise
    except Exception as exc:  # whatever the store raises (SQL, HTTP, MLflow): one line
        raise ConfigError(f"tracking.uri={settings.uri}: MLflow failed to open experiment {name}: "
                          f"{_one_line(exc)}") from None
    say(f"tracking: MLflow experiment {name} at {settings.store_uri}, "
        + (f"resuming run {parent} ({len(children)} trial(s) logged)" if resumed else f"run {parent}"))
    return TrackingSink(client, mlflow.entities, experiment, parent, search.schema, children)


@dataclass
class Child:
    """A trial's child run as the store has it: its latest metrics and whether it is tagged a front member."""

    run_id: str
    metrics: dict[str, float]
    pareto: bool = False


class TrackingSink:
    """Logs a run's finished trials to MLflow, each once, and its front at the end.

    Args:
        client: an ``mlflow.MlflowClient`` on the store.
        entities: ``mlflow.entities`` (Metric, Param, RunTag).
        experiment_id: the experiment of the parent run.
        parent_id: the run folder's parent run.
        schema: the run's columns: which of a row's values are params, metrics and tags.
        children: the trials logged already (a resumed run's), by trial number.
    """

    def __init__(self, client: Any, entities: Any, experiment_id: str, parent_id: str, schema: Any,
                 children: dict[int, Child]) -> None:
        self.client, self.entities = client, entities
        self.experiment_id, self.parent_id = experiment_id, parent_id
        self.params = list(schema.field_names)
        self.metrics = [*schema.result_columns, *schema.search_columns, *TAIL_METRICS]
        self.children = children
        self.failed = False  # said once; the trials it missed are logged at the end, or on resume

    def log_trial(self, row: Mapping[str, Any]) -> None:
        """A finished trial's row (as trials.csv has it) as a child run, unless it is logged already."""
        if not self.failed and int(row["trial"]) not in self.children:
            self._guarded(lambda: self._log_child(row), "the search goes on; missing trials are logged at the end")

    def finish(self, search: Search, trials: Sequence[FrozenTrial], front: Collection[int], status: str) -> None:
        """The end of this session: trials not logged yet, the front's tags and final figures, the artifacts;
        ``status`` is the parent run's (FINISHED, FAILED, KILLED)."""
        def work() -> None:
            made = [trial_row(t, search.schema, search.finals.get(t.number)) for t in trials if _ran(t)]
            rows = {row["trial"]: row for row in widened_rows(made, search.schema)}  # as trials.csv has them
            for number, row in rows.items():
                if number not in self.children:
                    self._log_child(row)
            for number, child in self.children.items():
                on_front = number in front
                # every re-timed trial's figures, a member the re-timing moved off the front included: the
                # table holds them too
                if (on_front or number in search.finals) and number in rows:
                    self._log_final(child, rows[number])
                if on_front != child.pareto:
                    self.client.set_tag(child.run_id, PARETO, str(on_front).lower(), synchronous=True)
                    child.pareto = on_front
            self._log_artifacts(search.run_dir)
            self.client.set_terminated(self.parent_id, status)
        self.failed = False  # tried again whatever failed during the search; a failure now is said too
        self._guarded(work, "resume with the same command to log what is missing")

    def _log_child(self, row: Mapping[str, Any]) -> None:
        number, Param = int(row["trial"]), self.entities.Param
        run = self.client.create_run(self.experiment_id, start_time=_millis(row.get("started_at")),
                                     tags={PARENT: self.parent_id, TRIAL: str(number), PARETO: "false",
                                           **self._tags(row)}, run_name=f"trial-{number}")
        child, at_ms = Child(run.info.run_id, self._numbers(row)), _millis(row.get("completed_at")) or _now()
        metrics = [self.entities.Metric(k, v, at_ms, SEARCH_STEP) for k, v in child.metrics.items()]
        self.client.log_batch(child.run_id, metrics=metrics, params=[Param(k, _text(row.get(k))) for k in self.params],
                              synchronous=True)
        self.client.set_terminated(child.run_id, STATUS.get(str(row["state"]), "FINISHED"),
                                   end_time=_millis(row.get("completed_at")))
        self.children[number] = child

    def _log_final(self, child: Child, row: Mapping[str, Any]) -> None:
        """A front member's or a re-timed trial's figures the run does not hold already, with the row's tags
        (its node, ``final``); nothing when there are none."""
        changed = {k: v for k, v in self._numbers(row).items() if child.metrics.get(k) != v}
        if changed:
            RunTag, Metric = self.entities.RunTag, self.entities.Metric
            self.client.log_batch(child.run_id, metrics=[Metric(k, v, _now(), FINAL_STEP) for k, v in changed.items()],
                                  tags=[RunTag(k, v) for k, v in self._tags(row).items()], synchronous=True)
            child.metrics.update(changed)

    def _numbers(self, row: Mapping[str, Any]) -> dict[str, float]:
        return {k: float(row[k]) for k in self.metrics if _is_number(row.get(k))}

    def _tags(self, row: Mapping[str, Any]) -> dict[str, str]:
        """State, error and every value of the row that is neither a param nor a number (energy's source)."""
        tags = {"optsearch.state": str(row["state"])}
        if row.get("error"):
            tags["optsearch.error"] = str(row["error"])[:TAG_CHARS]
        for key in (*self.metrics, *TAIL_TAGS):
            value = row.get(key)
            if key not in TAIL_METRICS and value is not None and not _is_number(value):
                tags[f"optsearch.{key}"] = _text(value)
        return tags

    def _log_artifacts(self, run_dir: Path) -> None:
        """The front's models and cards (models/ holds the members only), the tables, the page and the config."""
        if (run_dir / "models").is_dir():
            self.client.log_artifacts(self.parent_id, str(run_dir / "models"), "models")
        for path in [*(run_dir / name for name in RUN_FILES), *sorted(run_dir.glob("pareto-*.csv"))]:
            if path.is_file():
                self.client.log_artifact(self.parent_id, str(path))

    def _guarded(self, work: Callable[[], None], then: str) -> None:
        """Run ``work`` quietly; a store that fails is said once, and the search never stops for it."""
        try:
            with _quiet():
                work()
        except Exception as exc:  # the store went away or refused a call: the run's own record is study.db
            if not self.failed:
                say(f"tracking: MLflow failed ({_one_line(exc)[:300]}); {then}")
            self.failed = True


def _client(settings: TrackingSettings) -> Any:
    mlflow = _import_mlflow()
    try:
        with _quiet():
            if settings.folder:
                settings.folder.mkdir(parents=True, exist_ok=True)
            return mlflow.MlflowClient(tracking_uri=settings.store_uri)
    except Exception as exc:  # an unknown scheme, a refused file store, a database that cannot be opened
        raise ConfigError(f"tracking.uri={settings.uri}: MLflow cannot open it: {_one_line(exc)}") from None


def _import_mlflow() -> Any:
    try:
        with _environment(IMPORT_SWITCHES), _quiet():
            import mlflow

            telemetry = getattr(mlflow, "telemetry", None)  # MLflow 3; 2.x has none
            if telemetry is not None:
                telemetry.set_telemetry_client()  # with the switch set: none, even one an earlier import made
    except ImportError:
        raise ConfigError(f"tracking.uri is set but mlflow is not installed: {INSTALL} (or leave tracking.uri "
                          "null)") from None
    return mlflow


def _experiment(client: Any, name: str, artifact_location: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, artifact_location=artifact_location)
    if found.lifecycle_stage != "active":
        raise ConfigError(f"tracking: MLflow experiment {name} is deleted in that store; restore it, or name another "
                          "with tracking.experiment=NAME")
    return found.experiment_id


def _parent(client: Any, experiment: str, search: Search, workload_name: str) -> tuple[str, bool]:
    """The run folder's parent run, found by its path, else made; (its id, whether it was found)."""
    run_dir = str(search.run_dir.resolve())
    quote = '"' if "'" in run_dir else "'"  # MLflow's filter strings take either
    found = client.search_runs([experiment], f"tags.`{RUN_DIR}` = {quote}{run_dir}{quote}", max_results=1)
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id, True
    tags = {RUN_DIR: run_dir, "optsearch.run": search.run_dir.name, "optsearch.workload": workload_name,
            "optsearch.targets": ", ".join(search.targets or [search.target.name]),
            "optsearch.objectives": ", ".join(f"{m} ({d[:3]})" for m, d in search.objectives)}
    return client.create_run(experiment, tags=tags, run_name=search.run_dir.name).info.run_id, False


def _children(client: Any, experiment: str, parent: str) -> dict[int, Child]:
    """The trials the parent run holds already, page by page."""
    children: dict[int, Child] = {}
    token = None
    while True:
        page = client.search_runs([experiment], f"tags.`{PARENT}` = '{parent}'", max_results=1000, page_token=token)
        for run in page:
            if run.data.tags.get(TRIAL, "").isdigit():
                children[int(run.data.tags[TRIAL])] = Child(run.info.run_id, dict(run.data.metrics),
                                                            run.data.tags.get(PARETO) == "true")
        token = page.token
        if not token:
            return children


def _ran(trial: FrozenTrial) -> bool:
    """A trial that was built and measured (as the study counts finished ones): not a re-asked draw, not a
    stale trial that was run again as a new one."""
    ran = trial.state in (TrialState.COMPLETE, TrialState.FAIL) or stopped_at_rung(trial)
    return ran and not was_rerun(trial)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any) -> str:
    """A value as trials.csv writes it: blank for unset."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _millis(moment: str | None) -> int | None:
    return int(datetime.fromisoformat(moment).timestamp() * 1000) if moment else None


def _now() -> int:
    return int(time.time() * 1000)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` set in os.environ for the block only; what was there before is put back."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's and alembic's log lines and every warning kept out of the run's output for the block."""
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


__all__ = ["TrackingSettings", "TrackingSink", "check_tracking", "open_tracking"]
