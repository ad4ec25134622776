"""``python -m search.pick`` on a real finished run: filters, --list, and a model that runs from its card alone."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from search.pick import main as pick_main
from search.workloads.digits import split_digits
from tests.conftest import copy_run
from tests.doc_commands import documented

pytestmark = pytest.mark.slow


@pytest.fixture()
def run(finished_digits_run, tmp_path):
    """A private copy: some tests delete models from it."""
    return copy_run(finished_digits_run, tmp_path / "run")


def test_picked_model_runs_from_its_card_alone_with_the_reported_accuracy(run, tmp_path):
    out = tmp_path / "chosen"
    assert pick_main(documented("python -m search.pick results/<run> --sort accuracy --out chosen/",
                                {"results/<run>": str(run), "chosen/": str(out)})[3:]) == 0
    [card_path] = out.glob("trial-*.json")
    card = json.loads(card_path.read_text())
    session = ort.InferenceSession(str(out / card["model_file"]), providers=[card["runtime"]["provider"]])
    _, _, test = split_digits(seed=0)  # the card's preprocessing: pixel / 16, float32, (N, 1, 8, 8)
    assert card["input"]["shape"][1:] == list(test.x.shape[1:]) and card["input"]["dtype"] == str(test.x.dtype)
    logits = session.run([card["output"]["name"]], {card["input"]["name"]: test.x})[0]
    assert float(np.mean(logits.argmax(1) == test.y)) == pytest.approx(card["metrics"]["accuracy"], abs=1e-9)


def test_list_prints_every_qualifying_member_and_copies_nothing(run, tmp_path, capsys):
    front = pd.read_csv(run / "pareto.csv")
    assert pick_main([str(run), "--list", "--out", str(tmp_path / "none")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 + len(front)  # header + one line per member
    assert not (tmp_path / "none").exists()
    for trial, line in zip(front.sort_values(["latency_ms", "trial"])["trial"], printed[1:], strict=True):
        assert line.split()[0] == str(trial)  # sorted by --sort's default, latency_ms


def test_list_leaves_a_knob_that_was_not_applied_blank_not_nan(run, capsys):
    table = pd.read_csv(run / "trials.csv")
    done = table[table["state"] == "COMPLETE"]
    assert done["distill_temperature"].isna().any(), "the baseline is not distilled: a NaN in trials.csv"
    assert pick_main([str(run), "--all", "--list"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 + len(done) and "distill_temperature" in printed[0]
    assert not [line for line in printed if "NaN" in line or "nan" in line.split()], printed


def test_max_accuracy_drop_is_measured_from_the_baseline(run, capsys):
    table = pd.read_csv(run / "trials.csv")
    baseline = float(table.loc[table["baseline"], "accuracy"].iloc[0])
    assert pick_main(documented("python -m search.pick results/<run> --all --list --max-accuracy-drop 0",
                                {"results/<run>": str(run)})[3:]) == 0
    listed = capsys.readouterr().out.splitlines()[1:]
    done = table[table["state"] == "COMPLETE"]
    assert len(listed) == int((done["accuracy"] >= baseline).sum())


def test_a_model_that_was_not_kept_is_rebuilt_to_the_same_accuracy(run, tmp_path):
    front = pd.read_csv(run / "pareto.csv")
    best = front[front["accuracy"] == front["accuracy"].max()]
    trial = int(best["trial"].min())  # what --sort accuracy picks: ties go to the earliest trial
    for suffix in (".onnx", ".json"):
        (run / "models" / f"trial-{trial}{suffix}").unlink()
    out = tmp_path / "rebuilt"
    assert pick_main([str(run), "--sort", "accuracy", "--out", str(out)]) == 0
    card = json.loads((out / f"trial-{trial}.json").read_text())
    assert card["metrics"]["accuracy"] == pytest.approx(float(front.set_index("trial").loc[trial, "accuracy"]))
    assert card["metrics"]["size_bytes"] == (out / f"trial-{trial}.onnx").stat().st_size


@pytest.mark.parametrize("args, message", [
    (["--target", "tpu"], "meets --target tpu"),
    (["--min-accuracy", "1.01"], "meets --min-accuracy 1.01"),
    (["--sort", "speed"], "--sort speed: no such column"),
])
def test_nothing_to_pick_is_one_line_and_exit_2(run, capsys, args, message):
    assert pick_main([str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1


def test_a_folder_that_is_no_run_is_one_line_and_exit_2(tmp_path, capsys):
    assert pick_main([str(tmp_path)]) == 2
    assert "is it a finished run folder" in capsys.readouterr().err


@pytest.mark.parametrize("option, column, keeps", [("--max-p95-ms", "latency_p95_ms", np.less_equal),
                                                   ("--min-throughput-ips", "throughput_ips", np.greater_equal),
                                                   ("--max-memory-bytes", "peak_memory_bytes", np.less_equal)])
def test_service_limits_choose_the_model_with_its_runtime_configuration(run, capsys, option, column, keeps):
    table = pd.read_csv(run / "trials.csv")
    done = table[table["state"] == "COMPLETE"]
    limit = float(done[column].median())
    assert pick_main([str(run), "--all", "--list", option, str(limit)]) == 0
    listed = capsys.readouterr().out.splitlines()[1:]
    assert len(listed) == int(keeps(done[column], limit).sum()) >= 1


def test_the_chosen_row_is_told_in_the_schemas_words_without_nan(run, capsys):
    front = pd.read_csv(run / "pareto.csv")
    row = front.sort_values(["latency_ms", "trial"]).iloc[0]  # --sort latency_ms: lowest first, ties to the earliest
    trial = int(row["trial"])
    assert pick_main([str(run), "--sort", "latency_ms"]) == 0
    out = capsys.readouterr().out
    head, settings, objectives, *rest = out.splitlines()
    assert head.startswith(f"trial {trial}: ") and "on the front" in head
    assert ("final figures (re-timed" in head) == bool(row["final"])
    assert "NaN" not in out and "nan" not in out.split()
    assert settings.startswith("settings: ")
    assert f"quant_bits {int(row['quant_bits'])}" in settings and f"target {row['target']}" in settings
    assert f"batch_size {int(row['batch_size'])}" in settings
    low, high = row["latency_ci_low_ms"], row["latency_ci_high_ms"]
    assert f"latency_ms {row['latency_ms']:.4g} ms / batch [{low:.4g}, {high:.4g}]" in objectives
    assert f"accuracy {row['accuracy']:.4g}" in objectives
    assert f"size_bytes {int(row['size_bytes'])} bytes" in objectives
    assert any(line.startswith("also measured: ") and "latency_p95_ms" in line for line in rest)
    assert rest[-1] == f"model: {run / 'models' / f'trial-{trial}.onnx'} (card trial-{trial}.json)"


def test_a_row_off_the_front_says_so_and_how_to_get_its_model(run, capsys):
    table = pd.read_csv(run / "trials.csv")
    front = set(pd.read_csv(run / "pareto.csv")["trial"])
    off = table[(table["state"] == "COMPLETE") & ~table["trial"].isin(front)]
    if off.empty:
        pytest.skip("every completed trial of this run is on its front")
    trial, baseline = int(off["trial"].iloc[0]), bool(off["baseline"].iloc[0])
    assert pick_main([str(run), "--all", "--min", f"trial={trial}", "--max", f"trial={trial}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    standing = "the baseline (the original model), " if baseline else ""
    # a member re-timed in the re-timing phase may leave the front there: its figures are then final
    figures = ("final figures (re-timed alone on its node after the search)" if bool(off["final"].iloc[0])
               else "figures from the search (not re-timed)")
    assert lines[0] == f"trial {trial}: {standing}not on the front, {figures}"
    assert lines[-1] == "model: not kept in the run folder; --out DIR rebuilds it from its parameters"


def test_the_summary_groups_each_knobs_settings_and_skips_what_was_not_applied():
    """On rows made up for it: the grouping, the short names, and what an unapplied knob leaves out."""
    from search.config import compose_config, to_container
    from search.pick import setting_groups
    from search.config import plugins_from_config
    from search.results.chosen import describe_choice

    plugins = plugins_from_config(to_container(compose_config([])))
    nan = float("nan")
    row = pd.Series({"trial": 7, "baseline": False, "final": True, "target": "cpu", "fusion": "none", "fused_ops": 0,
                     "quant_bits": 8, "quant_mode": "minmax", "prune_rate": 0.5, "prune_round_to": 8.0,
                     "prune_removed": 0.47, "distill_temperature": 4.0, "distill_alpha": 0.9,
                     "parallelism": "intra_op", "degree": 2, "micro_batches": nan, "batch_size": 32,
                     "accuracy": 0.98133, "latency_ms": 1.234, "latency_ci_low_ms": 1.2, "latency_ci_high_ms": 1.26})
    lines = describe_choice(row, plugins.schema, setting_groups(plugins), "the front", "here").splitlines()
    assert lines[0] == "trial 7: on the front, final figures (re-timed alone on its node after the search)"
    assert lines[1] == ("settings: fusion none · quant_bits 8 (mode minmax) · prune_rate 0.5 (round_to 8, removed 0.47)"
                        " · distill_temperature 4 (alpha 0.9) · parallelism intra_op (degree 2) · batch_size 32"
                        " · target cpu")
    assert lines[2] == "objectives: accuracy 0.9813 · latency_ms 1.234 ms / batch [1.2, 1.26]"
    baseline = row.copy()
    baseline[["baseline", "final", "prune_rate", "prune_removed", "parallelism", "degree"]] = \
        [True, False, 0.0, 0.0, "sequential", 1]
    baseline[["quant_bits", "quant_mode", "prune_round_to", "distill_temperature", "distill_alpha"]] = \
        [32, nan, nan, nan, nan]
    lines = describe_choice(baseline, plugins.schema, setting_groups(plugins), None, "here").splitlines()
    assert lines[0] == ("trial 7: the baseline (the original model), not on the front, "
                        "figures from the search (not re-timed)")
    assert lines[1] == ("settings: fusion none · quant_bits 32 · prune_rate 0 · parallelism sequential · batch_size 32"
                        " · target cpu")
