"""The MLflow sink (search/run/tracking.py) on a real local MLflow store: what it logs, once, and what it never does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from search.config import compose_config
from search.core import attributes
from search.errors import ConfigError
from search.results.tables import trial_row, trials_table, write_tables
from search.run.driver import prepare
from search.run.tracking import TrackingSettings, check_tracking, open_tracking
from tests.conftest import REPO, search, tried
from tests.doc_commands import documented

PARENT = "mlflow.parentRunId"


@pytest.fixture()
def mlflow():
    return pytest.importorskip("mlflow")


def children_of(client, parent) -> dict[int, object]:
    runs = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT}` = '{parent.info.run_id}'")
    numbers = [int(r.data.tags["optsearch.trial"]) for r in runs]
    assert len(numbers) == len(set(numbers)), f"a trial logged twice: {sorted(numbers)}"
    return {int(r.data.tags["optsearch.trial"]): r for r in runs}


def parents_in(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([found.experiment_id]) if PARENT not in r.data.tags]


def add_trial(study: optuna.Study, state: TrialState, candidate: dict, outcome: attributes.Outcome,
              stopped: bool = False) -> None:
    """A trial stored as the driver stores one: its candidate and outcome through the attributes codec."""
    trial = study.ask()
    trial.set_user_attr(attributes.CANDIDATE, candidate)
    attributes.write_outcome(trial, outcome)
    if stopped:
        attributes.mark_stopped_at_rung(trial)
    values = [outcome.metrics[m] for m, _ in study.user_attrs["objectives"]] if state == TrialState.COMPLETE else None
    study.tell(trial, values, state=state)


def small_study(schema) -> optuna.Study:
    """Two completed trials, a failed one, one a recovery rung stopped (it ran) and a draw never built (it did not)."""
    objectives = list(schema.objectives)
    study = optuna.create_study(directions=[d for _, d in objectives])
    study.set_user_attr("objectives", objectives)
    base = {f.name: f.unset for f in schema.fields} | {"target": "cpu"}
    figures = {c: i + 1 if schema.column(c).kind == "int" else 1.0 + i / 8 for i, c in enumerate(schema.result_columns)}
    figures["energy_source"] = "estimate"
    add_trial(study, TrialState.COMPLETE, base, attributes.Outcome(figures, "node-a", 2.5))
    add_trial(study, TrialState.COMPLETE, base | {"quant_bits": 8, "quant_mode": "static"},
              attributes.Outcome(figures | {"latency_ms": 0.4, "accuracy": 0.9}, "node-a", 3.0))
    add_trial(study, TrialState.FAIL, base | {"quant_bits": 4}, attributes.Outcome(error="int4: no MatMul to quantize"))
    stopped = attributes.Outcome({"accuracy": 0.2}, "node-a", 1.0, error="stopped after recovery epoch 1")
    add_trial(study, TrialState.PRUNED, base | {"prune_rate": 0.5}, stopped, stopped=True)
    add_trial(study, TrialState.PRUNED, base | {"quant_bits": 16}, attributes.Outcome.refused("no fp16 here"))
    return study


def write_run_files(search, study: optuna.Study, front: set[int]) -> None:
    """The files the driver leaves in the run folder at the end: the tables and the front's models and cards."""
    table = trials_table(study.get_trials(), search.schema, search.finals)
    (search.run_dir / "models").mkdir(parents=True, exist_ok=True)
    write_tables(search.run_dir, table, table[table["trial"].isin(front)])
    for number in front:
        (search.run_dir / "models" / f"trial-{number}.onnx").write_bytes(b"onnx bytes of trial %d" % number)
        (search.run_dir / "models" / f"trial-{number}.json").write_text(f'{{"trial": {number}}}')


def expected_params(row, schema) -> dict[str, str]:
    return {f.name: "" if row[f.name] is None else str(row[f.name]) for f in schema.fields}


def expected_metrics(row, schema) -> dict[str, float]:
    names = [*schema.result_columns, *schema.search_columns, "duration_s", "store_hits", "build_s_saved"]
    return {k: float(row[k]) for k in names if isinstance(row.get(k), (int, float)) and not isinstance(row[k], bool)}


def test_the_sink_logs_each_trial_once_with_the_rows_figures_and_the_front_at_the_end(mlflow, tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    search = prepare(compose_config([f"results_dir={tmp_path / 'results'}", "run=r", f"tracking.uri={uri}"]))
    study = small_study(search.schema)
    trials = study.get_trials()
    check_tracking(search.config)
    sink = open_tracking(search, "digits")
    for trial in trials[:3]:  # as the search loop does; trial 3 is missed (a store down then): the end logs it
        sink.log_trial(trial_row(trial, search.schema))
    search.finals[1] = attributes.Final({"latency_ms": 0.25}, "node-b", 1.0)  # the re-timing phase's figure
    write_run_files(search, study, front={1})
    sink.finish(search, trials, front={1}, status="FINISHED")

    client = mlflow.MlflowClient(uri)
    [parent] = parents_in(client, "optsearch-digits")
    assert parent.data.tags["optsearch.run_dir"] == str(search.run_dir.resolve())
    assert parent.data.tags["optsearch.workload"] == "digits" and parent.info.status == "FINISHED"
    assert parent.data.tags["optsearch.objectives"] == ", ".join(f"{m} ({d[:3]})" for m, d in search.objectives)
    assert parent.data.tags["optsearch.objectives"].startswith("accuracy (max), latency_ms (min)")
    children = children_of(client, parent)
    assert sorted(children) == [0, 1, 2, 3]  # trial 4 was never built
    table = trials_table(trials, search.schema, search.finals).set_index("trial")  # as trials.csv holds it
    for number, run in children.items():
        row = trial_row(trials[number], search.schema, search.finals.get(number))
        # a re-timed row's intervals are widened to cover a new session (search/results/intervals.py), as in the table
        row.update({c: table.loc[number, c] for c in ("latency_ci_low_ms", "latency_ci_high_ms", "energy_ci_low_mj",
                                                    "energy_ci_high_mj") if row["final"]})
        assert run.data.params == expected_params(row, search.schema)
        assert run.data.metrics == pytest.approx(expected_metrics(row, search.schema))
        assert run.data.tags["optsearch.state"] == row["state"]
        assert run.data.tags["optsearch.pareto"] == ("true" if number == 1 else "false")
    assert children[1].data.metrics["latency_ms"] == 0.25
    assert (children[1].data.tags["optsearch.node"], children[1].data.tags["optsearch.final"]) == ("node-b", "True")
    assert [(m.step, m.value) for m in client.get_metric_history(children[1].info.run_id, "latency_ms")] == [
        (0, 0.4), (1, 0.25)]
    assert children[2].data.tags["optsearch.error"] == "int4: no MatMul to quantize"
    assert children[0].data.tags["optsearch.energy_source"] == "estimate"
    assert [children[n].info.status for n in range(4)] == ["FINISHED", "FINISHED", "FAILED", "KILLED"]
    models = {a.path for a in client.list_artifacts(parent.info.run_id, "models")}
    assert models == {"models/trial-1.onnx", "models/trial-1.json"}
    assert {"trials.csv", "pareto.csv"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    copy = client.download_artifacts(parent.info.run_id, "models/trial-1.onnx", str(tmp_path))
    assert Path(copy).read_bytes() == b"onnx bytes of trial 1"

    # a resumed run: the same parent, nothing twice; a member that left the front is untagged
    again = open_tracking(search, "digits")
    assert again.parent_id == parent.info.run_id and sorted(again.children) == [0, 1, 2, 3]
    for trial in trials[:4]:
        again.log_trial(trial_row(trial, search.schema, search.finals.get(trial.number)))
    again.finish(search, trials, front={0}, status="FINISHED")
    assert len(parents_in(client, "optsearch-digits")) == 1
    children = children_of(client, parent)
    assert sorted(children) == [0, 1, 2, 3]
    assert len(client.get_metric_history(children[1].info.run_id, "latency_ms")) == 2
    assert {n for n, r in children.items() if r.data.tags["optsearch.pareto"] == "true"} == {0}


def test_a_folder_is_a_sqlite_store_inside_it_and_bad_settings_are_one_line(mlflow, tmp_path, monkeypatch):
    folder = TrackingSettings(str(tmp_path / "mlruns"))
    assert folder.store_uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert folder.artifact_location == str(tmp_path / "mlruns" / "mlartifacts")
    assert TrackingSettings.from_config({"uri": None, "experiment": "x"}) is None
    with pytest.raises(ConfigError, match="unknown setting"):
        TrackingSettings.from_config({"url": "mlruns"})
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match=r"tracking.uri=file:.*maintenance mode"):
        check_tracking({"tracking": {"uri": f"file://{tmp_path / 'fs'}"}})


def test_without_mlflow_the_run_ends_at_start_with_one_line(tmp_path):
    hide = "import sys; sys.modules['mlflow'] = None; from search.__main__ import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", hide, f"results_dir={tmp_path}", "run=r",
                           f"tracking.uri={tmp_path / 'mlruns'}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "pip install mlflow-skinny" in proc.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "mlruns").exists()


# Variables under which MLflow itself sends no telemetry (mlflow/telemetry/utils.py): cleared so the test can fail.
QUIET_ALREADY = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")
NO_TELEMETRY = """
import os, socket, sys, threading
tried = []
def refuse(*args, **kwargs):
    tried.append(args[:2])
    raise OSError("no network in this test")
socket.getaddrinfo = refuse
socket.socket.connect = lambda self, address: refuse(address)
import mlflow  # a user's own import came first: it made a telemetry client
made = mlflow.telemetry.get_telemetry_client() is not None
from search.run.tracking import check_tracking
check_tracking({"tracking": {"uri": sys.argv[1]}})
client = mlflow.MlflowClient(f"sqlite:///{sys.argv[1]}/mlflow.db")
client.create_run(client.create_experiment("x", artifact_location=sys.argv[1]))  # calls MLflow's telemetry records
threads = [t.name for t in threading.enumerate() if "Telemetry" in t.name]
print(made, mlflow.telemetry.get_telemetry_client(), threads, tried,
      [k for k in ("MLFLOW_DISABLE_TELEMETRY", "MLFLOW_CONFIGURE_LOGGING") if k in os.environ])
"""


def test_mlflow_sends_no_telemetry_and_the_environment_is_left_as_it_was(mlflow, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in QUIET_ALREADY and not k.startswith("MLFLOW_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", NO_TELEMETRY, str(tmp_path / "store")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "True None [] [] []"


@pytest.mark.slow
def test_a_search_with_tracking_fills_the_store_and_a_resume_adds_only_new_trials(mlflow, tmp_path, teacher_cache):
    store = tmp_path / "mlruns"
    command = documented("python -m search tracking.uri=mlruns", {"tracking.uri=mlruns": f"tracking.uri={store}"})
    proc = search(tmp_path, teacher_cache, *command[3:], "trials=3", "workers=2", "run=t", "remeasure=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tracking: MLflow experiment optsearch-digits" in proc.stderr
    assert [line for line in proc.stderr.splitlines() if "mlflow" in line.lower() and not line.startswith("tracking:")
            ] == []  # no log line or warning of MLflow's own
    run_dir = tmp_path / "t"
    client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    [parent] = parents_in(client, "optsearch-digits")
    assert parent.data.tags["optsearch.run_dir"] == str(run_dir.resolve()) and parent.info.status == "FINISHED"
    table = tried(pd.read_csv(run_dir / "trials.csv", float_precision="round_trip"))
    children = children_of(client, parent)
    assert sorted(children) == sorted(table["trial"]) and len(children) == 3
    for row in table.to_dict("records"):  # the re-timed front members' figures included
        run = children[row["trial"]]
        assert {k: row[k] for k in run.data.metrics} == run.data.metrics, row["trial"]
        assert {"accuracy", "latency_ms", "size_bytes"} <= set(run.data.metrics) or row["state"] != "COMPLETE"
        assert run.data.params["quant_bits"] == str(row["quant_bits"])
        assert run.data.tags["optsearch.state"] == row["state"]
    front = set(pd.read_csv(run_dir / "pareto.csv")["trial"])
    assert {n for n, r in children.items() if r.data.tags["optsearch.pareto"] == "true"} == front
    models = {a.path for a in client.list_artifacts(parent.info.run_id, "models")}
    assert models == {f"models/{p.name}" for p in (run_dir / "models").iterdir()} and models

    proc = search(tmp_path, teacher_cache, "trials=4", "workers=2", "run=t", f"tracking.uri={store}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming run {parent.info.run_id} (3 trial(s) logged)" in proc.stderr
    assert len(parents_in(client, "optsearch-digits")) == 1
    assert len(children_of(client, parent)) == len(tried(pd.read_csv(run_dir / "trials.csv"))) == 4
