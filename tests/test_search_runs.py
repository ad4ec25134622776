"""Whole searches of their own (each test runs one or two): resume, Ctrl-C, timeouts, rebuilds in the re-timing
phase, and draws that measure nothing new. Apart from tests/test_search.py so that the suite's two processes share
the long ones (--dist loadfile keeps a file in one process)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.conftest import quick_overrides, search, tried
from tests.driver_control import wait_for_running

REPO = Path(__file__).resolve().parent.parent


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


def test_ctrl_c_saves_the_tables_and_the_same_command_resumes(tmp_path, teacher_cache):

    quick = [*quick_overrides(tmp_path, teacher_cache), "trials=3", "workers=2", "run=c"]
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
