"""The report: hypervolume history, knob importance, the interactive page, and re-rendering a run from study.db."""

from __future__ import annotations

import shutil

import matplotlib.image
import numpy as np
import optuna
import pandas as pd
import pytest

from evaluators import Accuracy, Latency
from search.config import make_schema
from search.results.history import hypervolume_history
from search.results.html import NEUTRAL, pareto_figure
from search.results.importance import RESAMPLES, importances
from search.results.plots import plot_importance
from search.report import main as report_main
from spaces import BatchSize, Distillation, Parallelism, PruneRate, QuantBits
from tests.doc_commands import documented

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


def _driven_study() -> optuna.Study:
    """24 trials: quant_bits alone sets latency; accuracy is noise; the knob "noise" does nothing."""
    rng = np.random.default_rng(7)
    return _study([(float(rng.random()), 1.0 if bits == 8 else 4.0, bits) for bits in [8, 32] * 12])


def test_importance_finds_the_knob_that_drives_an_objective_and_not_the_one_that_does_not():
    found = importances(_driven_study(), TWO)
    latency = {k.knob: k for k in found["latency_ms"].knobs}
    assert latency["quant_bits"].distinguishable and latency["quant_bits"].low > 0.5
    assert not latency["noise"].distinguishable and latency["noise"].low < found["latency_ms"].threshold
    # an objective no knob drives: nothing is called important, however fANOVA splits the noise
    assert not any(k.distinguishable for k in found["accuracy"].knobs)
    assert found["latency_ms"].trials == 24 and found["latency_ms"].resamples == RESAMPLES


def test_importance_is_the_same_picture_every_time():
    assert importances(_driven_study(), TWO) == importances(_driven_study(), TWO)


def test_importance_says_why_it_has_nothing_to_say():
    assert importances(_study([(0.9, 1.0, 8)]), TWO)["accuracy"] == (
        "1 completed trial: too few for importance to mean anything; needs 20")
    assert importances(_study([(0.9, float(b), b) for b in [8, 32] * 9 + [8]]), TWO)["latency_ms"] == (
        "19 completed trials: too few for importance to mean anything; needs 20")
    same = importances(_study([(0.9, 1.0, bits) for bits in [8, 32] * 10]), TWO)
    assert same == {"accuracy": "the same in every trial", "latency_ms": "the same in every trial"}


def test_importance_needs_three_trials_a_knob_beyond_twenty():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for number in range(20):
        study.add_trial(optuna.trial.create_trial(
            params={f"knob{k}": float((number * (k + 1)) % 11) for k in range(7)},  # seven knobs that all vary
            distributions={f"knob{k}": optuna.distributions.FloatDistribution(0, 10) for k in range(7)},
            values=[0.9, float(number)]))
    assert importances(study, TWO)["latency_ms"].endswith("needs 21")


def test_importance_png_draws_spreads_and_reasons(tmp_path):
    found = {**importances(_driven_study(), TWO), "size_bytes": "the same in every trial"}
    plot_importance(tmp_path / "importance.png", found)
    assert matplotlib.image.imread(tmp_path / "importance.png").shape[1] > 3 * 300  # three panels


def test_interactive_page_plots_every_completed_trial_once():
    table = completed([(0.9, 2.0), (1.0, 1.0), (0.8, 3.0)]).assign(
        trial=[0, 1, 2], baseline=[True, False, False], parallelism=["sequential", "intra_op", "sequential"],
        energy_source="estimate")
    table = pd.concat([table, table.iloc[:1].assign(trial=3, state="FAIL", baseline=False)], ignore_index=True)
    assert list(TWO_SCHEMA.objectives) == TWO
    figure = pareto_figure(table, table[table["trial"] == 1], TWO_SCHEMA)
    drawn = [trace for trace in figure.data if not trace.showlegend]  # the legend's own entries hold no point
    assert sum(len(trace.x) for trace in drawn) == 3  # one panel (one pair); the failed trial is not drawn
    assert all(list(trace.x) == [None] for trace in figure.data if trace.showlegend)
    assert {trace.name for trace in drawn} == {"sequential", "intra_op"}
    member = next(trace for trace in drawn if trace.name == "intra_op")
    assert list(member.marker.symbol) == ["diamond"] and "trial: 1" in member.hovertext[0]


def test_interactive_legend_keys_modes_by_colour_and_membership_by_marker():
    table = completed([(0.9, 2.0), (1.0, 1.0), (0.8, 3.0)]).assign(
        trial=[0, 1, 2], baseline=[True, False, False], parallelism=["sequential", "intra_op", "inter_op"],
        energy_source="estimate")
    legend = {trace.name: trace.marker for trace in pareto_figure(table, table[table["trial"] == 1], TWO_SCHEMA).data
              if trace.showlegend}
    assert list(legend) == ["inter_op", "intra_op", "sequential", "dominated", "Pareto member", "fp32 baseline"]
    modes = [legend[mode] for mode in ("inter_op", "intra_op", "sequential")]
    assert {marker.symbol for marker in modes} == {"circle"} and len({marker.color for marker in modes}) == 3
    assert [legend[m].symbol for m in ("dominated", "Pareto member", "fp32 baseline")] == ["circle", "diamond", "star"]
    assert {legend[m].color for m in ("dominated", "Pareto member", "fp32 baseline")} == {NEUTRAL}


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
    assert report_main(documented("python -m search.report results/<run>", {"results/<run>": str(copy)})[3:]) == 0
    for name in ("trials.csv", "trials.parquet", "pareto.csv", "pareto.png", "pareto.html", "history.png",
                 "importance.png"):
        assert (copy / name).stat().st_size > 0, name
    pd.testing.assert_frame_equal(pd.read_csv(copy / "pareto.csv"), pd.read_csv(finished_digits_run / "pareto.csv"))
    parquet = pd.read_parquet(copy / "trials.parquet")
    assert len(parquet) == len(pd.read_csv(finished_digits_run / "trials.csv"))
    assert parquet["latency_repeats"].dtype == "Int64"
