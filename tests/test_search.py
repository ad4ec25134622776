"""Whole searches through the real command: Hydra config, Optuna study, local Ray with 2 workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pandas as pd
import pytest

from search.workloads.digits import split_digits
from tests.conftest import DIGITS_RUN, copy_run, search, tried
from tests.driver_control import wait_for_running

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


def test_quiet_phase_rebuilds_a_member_whose_model_is_gone(tmp_path, teacher_cache):
    """A re-timed front can take back a trial whose model was dropped: it is rebuilt, and must be the same model."""
    first = search(tmp_path, teacher_cache, "trials=3", "workers=2", "run=gone", "remeasure=false")
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stderr.count("\nenergy: ") + first.stderr.startswith("energy: ") == 1, "the meter is said once"
    run = tmp_path / "gone"
    before = pd.read_csv(run / "pareto.csv").set_index("trial")
    assert not before["final"].any()
    done = pd.read_csv(run / "trials.csv").query("state == 'COMPLETE'")
    # The smallest model, if no other is as small, is on every front: only an equally small model could dominate it
    # (size is exact), so it stays whatever the re-timing finds, and its rebuild can be compared.
    victim = int(done.loc[done["size_bytes"].idxmin(), "trial"])
    assert (done["size_bytes"] == done["size_bytes"].min()).sum() == 1 and victim in before.index
    (run / "models" / f"trial-{victim}.onnx").unlink()
    (run / "models" / f"trial-{victim}.json").unlink()
    again = search(tmp_path, teacher_cache, "trials=3", "workers=2", "run=gone", "remeasure=true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"trial {victim}: " in again.stderr and "(rebuilt)" in again.stderr
    after = pd.read_csv(run / "pareto.csv").set_index("trial")
    assert after["final"].all()
    assert {p.stem for p in (run / "models").glob("*.onnx")} == {f"trial-{t}" for t in after.index}
    assert victim in after.index
    assert after.loc[victim, "accuracy"] == before.loc[victim, "accuracy"], "the rebuild is the same model"
    assert after.loc[victim, "size_bytes"] == before.loc[victim, "size_bytes"]


def test_progress_and_summary_are_printed(digits_run_output):
    stdout, stderr = digits_run_output  # the shared run: trials=3
    assert "trials 3/3" in stderr and "left" in stderr and "front" in stderr
    assert "Pareto front" in stdout and "python -m search.pick" in stdout


def test_a_setting_the_model_cannot_take_is_re_asked_and_never_counted_as_a_failure(tmp_path):
    # int4 weight-only has nothing to quantize in a conv-only model: the build says so (NotApplicable), and each such
    # draw is kept as PRUNED with the reason, re-asked, and left out of the trials done and the failures.
    proc = search(tmp_path, None, "trials=4", "workers=2", "run=f", "sampler=random", "seed=0",
                  "~workload", "+workload._target_=tests.workloads.conv_only",
                  "space.knobs.quant_bits.choices=[4]")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(tmp_path / "f" / "trials.csv")
    int4 = table[table["quant_bits"] == 4]  # every one re-asked: by the build, or before it (a prune value's twin)
    assert len(int4) >= 1 and (int4["state"] == "PRUNED").all(), int4[["state", "error"]]
    assert int4["error"].str.contains("re-asked").all()
    assert int4["error"].str.contains("not applicable: int4 weight-only").any(), "the build's own reason is kept"
    ran = tried(table)
    assert len(ran) == 4 and (ran["state"] == "COMPLETE").all() and (ran["quant_bits"] == 32).all()
    assert "trials 4/4 · 0 failed" in proc.stderr


def test_existing_run_is_resumed_and_earlier_trials_kept(tmp_path, teacher_cache):
    # A space of one model (fp32, unpruned) run in several ways: it is built once, then served by the
    # run's store to the trial in flight beside the first (which waits for it) and, after the resume,
    # to the new driver's fresh workers.
    one_model = ["~space.knobs.prune_rate", "~space.knobs.distillation", "space.knobs.quant_bits.choices=[32]"]
    first = search(tmp_path, teacher_cache, "trials=2", "workers=2", "run=r", *one_model)
    assert first.returncode == 0, first.stderr[-2000:]
    before = pd.read_csv(tmp_path / "r" / "trials.csv", dtype=str)  # as written: a later row may change a dtype
    again = search(tmp_path, teacher_cache, "trials=3", "workers=2", "run=r", *one_model)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" in again.stderr
    after = pd.read_csv(tmp_path / "r" / "trials.csv", dtype=str)
    assert len(tried(after)) == 3  # and a draw that repeated a measured trial, if any, was re-asked
    # a re-timed row's interval rests on the run's spread, which the trials re-timed after the resume refine
    spread = ["latency_ci_low_ms", "latency_ci_high_ms", "energy_ci_low_mj", "energy_ci_high_mj"]
    pd.testing.assert_frame_equal(after.iloc[:len(before)].reset_index(drop=True).drop(columns=spread),
                                  before.drop(columns=spread))
    table = tried(pd.read_csv(tmp_path / "r" / "trials.csv"))
    # trials 0 and 1 start together: whichever claims the model first builds it, the other waits and reuses it
    assert sorted(table["store_hits"].iloc[:2]) == [0, 1] and table["store_hits"].iloc[2] == 1
    assert (table.loc[table["store_hits"] == 1, "build_s_saved"] > 0).all()
    assert len(list((tmp_path / "r" / "artifacts").glob("*.onnx"))) == 2  # the student and the model
    assert "artifact store: 2 of 3 trials reused a stored build" in again.stdout


def test_resume_with_a_different_space_is_refused(finished_digits_run, tmp_path, teacher_cache):
    copy_run(finished_digits_run, tmp_path / "three")  # the refusal changes nothing, but the run is shared
    proc = search(tmp_path, teacher_cache, *DIGITS_RUN, "space.knobs.prune_rate.high=0.5")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: run ")
    assert "different space" in proc.stderr and "Traceback" not in proc.stderr


def test_ctrl_c_saves_the_tables_and_the_same_command_resumes(tmp_path, teacher_cache):
    import signal

    quick = [f"results_dir={tmp_path}", f"workload.cache_dir={teacher_cache}", "workload.epochs=15",
             "workload.distill_epochs=3", "trials=3", "workers=2", "run=c"]
    proc = subprocess.Popen([sys.executable, "-m", "search", *quick], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_running(proc, tmp_path / "c" / "study.db", baseline_too=True)  # Ray is up and a trial in flight
    except AssertionError:
        proc.kill()
        raise AssertionError(f"no trial ran before Ctrl-C: {proc.communicate()[1][-2000:]}") from None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "resume with the same command and run=c" in err and "Traceback" not in err
    assert (tmp_path / "c" / "trials.csv").exists()
    again = subprocess.run([sys.executable, "-m", "search", *quick], cwd=REPO, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    table = tried(pd.read_csv(tmp_path / "c" / "trials.csv"))
    rerun = table["error"].fillna("").str.startswith("re-run as")
    assert (~rerun).sum() == 3, "three finished trials, not counting the interrupted ones"
    assert table[~rerun]["baseline"].sum() == 1


def test_trial_past_its_timeout_is_cancelled_and_recorded(tmp_path, teacher_cache):
    # 3000 recovery epochs take many minutes: every pruned trial must be cut off at 10 s. The baseline is
    # not pruned, and with one worker it never waits on another trial's build for the quiet node.
    proc = search(tmp_path, teacher_cache, "trials=3", "workers=1", "run=t", "trial_timeout_s=10",
                  "workload.distill_epochs=3000", "space.knobs.prune_rate.high=0.5", "sampler=random", "seed=3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = tried(pd.read_csv(tmp_path / "t" / "trials.csv"))
    assert len(table) == 3 and table.iloc[0]["state"] == "COMPLETE"
    timed_out = table[table["error"].fillna("").str.startswith("timed out")]
    assert len(timed_out) >= 1 and (timed_out["prune_rate"] > 0).all()
    assert (timed_out["duration_s"].isna()).all()


def test_a_draw_that_repeats_a_measured_trial_is_re_asked_and_an_exhausted_space_ends_the_search(tmp_path,
                                                                                                  teacher_cache):
    # a space of one candidate, the baseline itself: every later draw repeats trial 0's build and runtime
    one = ["~space.knobs.prune_rate", "~space.knobs.distillation", "space.knobs.quant_bits.choices=[32]",
           "space.knobs.parallelism.modes=[sequential]"]
    proc = search(tmp_path, teacher_cache, "trials=3", "workers=2", "run=one", *one)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(tmp_path / "one" / "trials.csv")
    assert (tried(table)["state"] == "COMPLETE").sum() == 1, "the same model is measured once, not three times"
    repeats = table[table["state"] == "PRUNED"]
    assert len(repeats) >= 1 and repeats["error"].str.contains("repeats trial 0").all()
    assert "the space looks exhausted" in proc.stderr and "stopped early: the space looks exhausted" in proc.stdout
