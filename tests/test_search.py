"""Whole searches through the real command: Hydra config, Optuna study, local Ray with 2 workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pandas as pd
import pytest

from search.workloads.digits import split_digits
from tests.conftest import DIGITS_RUN, copy_run, search, tried

REPO = Path(__file__).resolve().parent.parent
CONTRACT_COLUMNS = ["trial", "state", "target", "quant_bits", "prune_rate", "distill_temperature", "parallelism",
                    "accuracy", "latency_ms", "latency_p95_ms", "throughput_ips", "energy_mj", "energy_source",
                    "size_bytes", "duration_s", "error"]
METRICS = ["accuracy", "latency_ms", "latency_p95_ms", "throughput_ips", "energy_mj", "energy_source", "size_bytes"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(finished_digits_run) -> Path:
    return finished_digits_run


def test_run_folder_holds_every_result_file(finished_run):
    for name in ("config.yaml", "study.db", "trials.csv", "trials.parquet", "pareto.csv", "pareto.png", "pareto.html",
                 "history.png", "importance.png"):
        assert (finished_run / name).stat().st_size > 0, name
    front = pd.read_csv(finished_run / "pareto.csv")
    assert len(front) >= 1
    for trial in front["trial"]:
        assert (finished_run / "models" / f"trial-{trial}.onnx").exists()
        assert (finished_run / "models" / f"trial-{trial}.json").exists()
    kept = {p.name for p in (finished_run / "models").iterdir()}
    assert len(kept) == 2 * len(front), "models/ holds exactly the Pareto members"


def test_trials_table_has_contract_columns_and_real_metrics(finished_run):
    table = tried(pd.read_csv(finished_run / "trials.csv"))
    assert set(CONTRACT_COLUMNS) <= set(table.columns)
    assert len(table) == 3
    done = table[table["state"] == "COMPLETE"]
    assert len(done) >= 2
    assert done[METRICS].notna().all().all()
    assert (done["latency_p95_ms"] >= done["latency_ms"]).all()
    assert set(done["energy_source"]) <= {"estimate", "rapl"}
    assert done["accuracy"].between(0, 1).all()
    assert (done["latency_ci_low_ms"] <= done["latency_ms"]).all()
    assert (done["latency_ms"] <= done["latency_ci_high_ms"]).all()
    assert (done["energy_ci_low_mj"] <= done["energy_mj"]).all()
    assert (done["energy_mj"] <= done["energy_ci_high_mj"]).all()
    assert (done["peak_memory_bytes"] > 0).all()
    unpruned = done.loc[done["prune_rate"] == 0, "prune_removed"]
    assert len(unpruned) >= 1, "the baseline at least is unpruned"
    assert done["prune_removed"].between(0, 1).all() and unpruned.eq(0).all()


def test_quiet_phase_retimes_every_pareto_member(finished_run):
    import json

    table = tried(pd.read_csv(finished_run / "trials.csv"))
    front = pd.read_csv(finished_run / "pareto.csv")
    assert len(front) >= 1 and front["final"].all(), "every front member was re-timed after the search"
    assert front["search_latency_ms"].notna().all()
    for trial in front["trial"]:
        assert json.loads((finished_run / "models" / f"trial-{trial}.json").read_text())["final"] is True
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{finished_run / 'study.db'}")
    assert {int(k.split(":")[1]) for k in study.user_attrs if k.startswith("final:")} >= set(front["trial"])
    assert table["final"].sum() >= len(front)


def test_first_trial_is_the_fp32_baseline(finished_run):
    first = pd.read_csv(finished_run / "trials.csv").iloc[0]
    assert first["trial"] == 0 and bool(first["baseline"])
    assert (first["quant_bits"], first["prune_rate"], first["parallelism"]) == (32, 0.0, "sequential")
    assert pd.isna(first["distill_temperature"]), "nothing was distilled, so no temperature is claimed"


def test_pareto_models_give_the_reported_accuracy_in_a_plain_session(finished_run):
    _, _, test = split_digits(seed=0)
    for row in pd.read_csv(finished_run / "pareto.csv").to_dict("records"):
        session = ort.InferenceSession(str(finished_run / "models" / f"trial-{row['trial']}.onnx"),
                                       providers=["CPUExecutionProvider"])
        logits = session.run(None, {"input": test.x})[0]
        assert float(np.mean(logits.argmax(1) == test.y)) == pytest.approx(row["accuracy"], abs=1e-9)


def test_model_card_tells_a_caller_how_to_run_the_model(finished_run):
    import json

    trial = int(pd.read_csv(finished_run / "pareto.csv")["trial"].iloc[0])
    card = json.loads((finished_run / "models" / f"trial-{trial}.json").read_text())
    assert card["input"] == {"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32",
                             "preprocessing": card["input"]["preprocessing"]}
    assert "16" in card["input"]["preprocessing"]
    assert card["runtime"]["provider"] == "CPUExecutionProvider"
    assert card["metrics"]["size_bytes"] == (finished_run / "models" / f"trial-{trial}.onnx").stat().st_size
    # the note says ESTIMATE exactly when the figure is one
    assert ("ESTIMATE" in card["measured"]["energy"]) == (card["metrics"]["energy_source"] == "estimate")


def test_study_is_readable_by_optuna(finished_run):
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{finished_run / 'study.db'}")
    assert len(study.trials) == 3
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["accuracy", "latency_ms", "energy_mj", "size_bytes"]


def test_progress_and_summary_are_printed(digits_run_output):
    stdout, stderr = digits_run_output  # the shared run: trials=3
    assert "trials 3/3" in stderr and "left" in stderr and "front" in stderr
    assert "Pareto front" in stdout and "python -m search.pick" in stdout


def test_resume_with_a_different_space_is_refused(finished_digits_run, tmp_path, teacher_cache):
    copy_run(finished_digits_run, tmp_path / "three")  # the refusal changes nothing, but the run is shared
    proc = search(tmp_path, teacher_cache, *DIGITS_RUN, "space.knobs.prune_rate.high=0.5")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: run ")
    assert "different space" in proc.stderr and "Traceback" not in proc.stderr
