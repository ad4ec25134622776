"""The report: hypervolume history, knob importance, the interactive page, and re-rendering a run from study.db."""

from __future__ import annotations

import shutil

import numpy as np
import optuna
import pandas as pd
import pytest

from evaluators import Accuracy, Latency
from search.plugins import make_schema
from search.results.history import hypervolume_history
from search.results.html import pareto_figure
from search.results.render import importances
from search.report import main as report_main
from spaces import BatchSize, Distillation, Parallelism, PruneRate, QuantBits

TWO = [("accuracy", "maximize"), ("latency_ms", "minimize")]
TWO_SCHEMA = make_schema([QuantBits(), PruneRate(), Distillation(), Parallelism(), BatchSize()],
                         [Accuracy(), Latency()])


def completed(rows: list[tuple[float, float]]) -> pd.DataFrame:
    times = pd.date_range("2026-01-01", periods=len(rows) + 1, freq="s")
    return pd.DataFrame({"state": "COMPLETE", "accuracy": [a for a, _ in rows], "latency_ms": [lat for _, lat in rows],
                         "started_at": [times[0].isoformat()] * len(rows),
                         "completed_at": [t.isoformat() for t in times[1:]]})


def test_hypervolume_of_one_corner_point_is_the_reference_box():
    # normalized: the best accuracy and the best latency in one trial sit at (0, 0); the box to 1.1 is 1.21
    table = completed([(0.9, 2.0), (1.0, 1.0)])
    history = hypervolume_history(table, TWO)
    assert history["completed"].tolist() == [1, 2]
    assert history["hypervolume"].iloc[-1] == pytest.approx(1.1 * 1.1)
    assert history["elapsed_s"].tolist() == [1.0, 2.0]


def test_hypervolume_never_shrinks_as_trials_complete():
    rng = np.random.default_rng(0)
    table = completed([(float(a), float(b)) for a, b in rng.random((15, 2))])
    volumes = hypervolume_history(table, TWO)["hypervolume"].to_numpy()
    assert (np.diff(volumes) >= -1e-12).all() and volumes[-1] > 0


def test_hypervolume_of_no_completed_trials_is_an_empty_history():
    assert hypervolume_history(completed([]), TWO).empty


def _study(values: list[tuple[float, float, int]]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, latency, bits in values:
        study.add_trial(optuna.trial.create_trial(
            params={"quant_bits": bits, "noise": float(np.random.default_rng(bits + len(study.trials)).random())},
            distributions={"quant_bits": optuna.distributions.CategoricalDistribution([8, 32]),
                           "noise": optuna.distributions.FloatDistribution(0, 1)},
            values=[accuracy, latency]))
    return study


def test_importance_finds_the_knob_that_drives_an_objective():
    # latency is set by quant_bits alone; "noise" is a knob that does nothing
    study = _study([(0.9, 1.0 if bits == 8 else 4.0, bits) for bits in [8, 32] * 8])
    found = importances(study, TWO)
    assert found["latency_ms"]["quant_bits"] > found["latency_ms"]["noise"]


def test_importance_says_why_it_has_nothing_to_say():
    assert importances(_study([(0.9, 1.0, 8)]), TWO) == {"accuracy": "needs 4 completed trials",
                                                        "latency_ms": "needs 4 completed trials"}
    assert importances(_study([(0.9, 1.0, bits) for bits in [8, 32] * 3]), TWO)["accuracy"] == "the same in every trial"


def test_interactive_page_plots_every_completed_trial_once():
    table = completed([(0.9, 2.0), (1.0, 1.0), (0.8, 3.0)]).assign(
        trial=[0, 1, 2], baseline=[True, False, False], parallelism=["sequential", "intra_op", "sequential"],
        energy_source="estimate")
    table = pd.concat([table, table.iloc[:1].assign(trial=3, state="FAIL", baseline=False)], ignore_index=True)
    assert list(TWO_SCHEMA.objectives) == TWO
    figure = pareto_figure(table, table[table["trial"] == 1], TWO_SCHEMA)
    assert sum(len(trace.x) for trace in figure.data) == 3  # one panel (one pair); the failed trial is not drawn
    assert {trace.name for trace in figure.data} == {"sequential", "intra_op"}
    member = next(trace for trace in figure.data if trace.name == "intra_op")
    assert list(member.marker.symbol) == ["diamond"] and "trial: 1" in member.hovertext[0]


def test_report_of_a_folder_that_is_no_run_is_one_line_and_exit_2(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


@pytest.mark.slow
def test_report_rerenders_a_run_from_study_db_and_config_alone(tmp_path, finished_digits_run):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("study.db", "config.yaml"):
        shutil.copy2(finished_digits_run / name, copy / name)
    assert report_main([str(copy)]) == 0
    for name in ("trials.csv", "trials.parquet", "pareto.csv", "pareto.png", "pareto.html", "history.png",
                 "importance.png"):
        assert (copy / name).stat().st_size > 0, name
    pd.testing.assert_frame_equal(pd.read_csv(copy / "pareto.csv"), pd.read_csv(finished_digits_run / "pareto.csv"))
    parquet = pd.read_parquet(copy / "trials.parquet")
    assert len(parquet) == len(pd.read_csv(finished_digits_run / "trials.csv"))
    assert parquet["latency_repeats"].dtype == "Int64"
