"""``python -m search.pick`` on a real finished run: filters, --list, and a model that runs from its card alone."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from search.pick import main as pick_main
from search.workloads.digits import split_digits

pytestmark = pytest.mark.slow


@pytest.fixture()
def run(finished_digits_run, tmp_path):
    """A private copy: some tests delete models from it."""
    return shutil.copytree(finished_digits_run, tmp_path / "run")


def test_picked_model_runs_from_its_card_alone_with_the_reported_accuracy(run, tmp_path):
    out = tmp_path / "chosen"
    assert pick_main([str(run), "--sort", "accuracy", "--out", str(out)]) == 0
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


def test_max_accuracy_drop_is_measured_from_the_baseline(run, capsys):
    table = pd.read_csv(run / "trials.csv")
    baseline = float(table.loc[table["baseline"], "accuracy"].iloc[0])
    assert pick_main([str(run), "--all", "--list", "--max-accuracy-drop", "0"]) == 0
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
