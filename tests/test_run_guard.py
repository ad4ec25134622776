"""Fail fast on a systematic failure, one driver per run folder, and a failed trial's error in one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from search.core.errors import ConfigError
from search.config import FailFast
from search.run.failures import likely_fix, one_line, reason, verdict
from search.run.lock import RunLock
from tests.conftest import REPO, quick_overrides, search
from tests.doc_commands import documented
from tests.driver_control import finished_trials, kill_session, wait_for_running

RAY_TRACEBACK = (
    "RayTaskError(ModuleNotFoundError): \x1b[36mray::run_trial()\x1b[39m (pid=4242, ip=10.1.2.3)\n"
    "  File \"/home/u/.venv/lib/python3.11/site-packages/ray/_private/serialization.py\", line 458, in _deserialize\n"
    "    return pickle.loads(data)\n"
    "ModuleNotFoundError: No module named 'mymodels'"
)


def test_a_ray_traceback_becomes_one_line_without_colour_codes():
    line = one_line(RAY_TRACEBACK)
    assert "\n" not in line and "\x1b" not in line
    assert line.endswith("ModuleNotFoundError: No module named 'mymodels'") and line.startswith("RayTaskError")


def test_the_same_mistake_reads_as_the_same_reason_whatever_its_numbers_and_paths():
    other = RAY_TRACEBACK.replace("4242", "977").replace("10.1.2.3", "10.9.9.9").replace("/home/u", "/srv/x")
    assert reason(RAY_TRACEBACK) == reason(other)
    assert (reason("ValueError: bad shape (3, 4) (at prune.py:12)")
            == reason("ValueError: bad shape (7, 1) (at prune.py:40)"))
    assert reason("ValueError: bad shape") != reason("TypeError: bad shape")
    assert "import" in likely_fix(reason(RAY_TRACEBACK))


def test_the_first_trials_failing_alike_stop_the_run():
    rule = FailFast(first=3, share=0.5, min_trials=8)
    assert verdict(rule, [RAY_TRACEBACK] * 2) is None  # too few to say
    said = verdict(rule, [RAY_TRACEBACK] * 3)
    assert said and "No module named 'mymodels'" in said and "likely fix" in said
    assert verdict(rule, [RAY_TRACEBACK, "", RAY_TRACEBACK]) is None  # one completed: not all alike
    assert verdict(FailFast(first=0), [RAY_TRACEBACK] * 3) is None  # 0: never on the first trials


def test_failures_of_one_reason_past_the_share_stop_the_run_once_enough_trials_finished():
    rule = FailFast(first=3, share=0.5, min_trials=8)
    oom = "MemoryError: cannot allocate {} bytes at batch {}".format
    mixed = ["", oom(10, 8), "", oom(20, 32), "", oom(30, 128), oom(40, 8)]  # the same reason, other numbers
    assert verdict(rule, mixed) is None  # 7 < min_trials
    assert verdict(rule, [*mixed, oom(50, 32)]) is not None  # 5 of 8 > half
    assert verdict(rule, [*mixed, ""]) is None  # 4 of 8 is not more than half


def test_a_trials_own_reason_never_stops_the_run():
    """A setting this model cannot take fails that trial only: a search with such trials runs to the end."""
    rule = FailFast(first=3, share=0.5, min_trials=4)
    own = "not applicable: int4 weight-only has no MatMul to apply to in this graph"
    assert verdict(rule, [own] * 10) is None


def test_fail_fast_settings_are_checked():
    with pytest.raises(ConfigError, match="fail_fast"):
        FailFast(share=0)


def test_a_second_driver_on_a_locked_run_is_refused_naming_the_first(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        lock.announce()
        before = sorted(p.name for p in (tmp_path / "run").iterdir())
        with pytest.raises(ConfigError, match=rf"pid {os.getpid()} on host {socket.gethostname()}"):
            RunLock(tmp_path / "run").acquire()
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before  # the refused one wrote nothing
    RunLock(tmp_path / "run").acquire().release()  # released: the next one gets it


def test_a_lock_left_by_a_killed_driver_does_not_block(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from search.run.lock import RunLock\n"
        f"lock = RunLock(Path({str(tmp_path / 'run')!r})).acquire(); lock.announce(); "
        "print('held', flush=True); time.sleep(60)")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
        RunLock(tmp_path / "run").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    RunLock(tmp_path / "run").acquire().release()


@pytest.mark.slow
def test_a_search_whose_every_trial_times_out_stops_in_a_few_trials_and_resumes_after_the_fix(tmp_path, teacher_cache):
    started = time.monotonic()
    proc = search(tmp_path, teacher_cache, *documented("python -m search trials=30 trial_timeout_s=0.01")[3:], "run=ff")
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert time.monotonic() - started < 60
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "timed out" in errors[0] and "trial_timeout_s" in errors[0]
    assert "Traceback" not in proc.stderr
    table = pd.read_csv(tmp_path / "ff" / "trials.csv")
    failed = table[table["state"] == "FAIL"]
    assert 3 <= len(failed) <= 5 and failed["error"].str.startswith("timed out").all()
    assert (tmp_path / "ff" / "errors.log").read_text().count("--- trial") == len(failed)
    fixed = search(tmp_path, teacher_cache, "trials=4", "run=ff", "cover=false", "remeasure=false")
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    table = pd.read_csv(tmp_path / "ff" / "trials.csv")
    assert (table["state"] == "COMPLETE").sum() >= 1


@pytest.mark.slow
def test_two_drivers_on_one_folder_the_second_is_refused_and_a_resume_after_kill_9_completes(tmp_path, teacher_cache):
    quick = quick_overrides(tmp_path, teacher_cache)
    # more trials than it can finish before it is killed: the second driver always meets it running
    first = subprocess.Popen([sys.executable, "-m", "search", *quick, "trials=40", "run=twice"],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
    db = tmp_path / "twice" / "study.db"
    try:
        wait_for_running(first, db, baseline_too=True)
        before = (tmp_path / "twice" / "config.yaml").read_bytes()
        second = search(tmp_path, teacher_cache, "trials=40", "run=twice")
        assert first.poll() is None, "the first driver ended before the second was refused: nothing was checked"
        assert second.returncode == 2, second.stderr[-2000:]
        errors = second.stderr.strip().splitlines()
        assert len(errors) == 1 and f"pid {first.pid} on host {socket.gethostname()}" in errors[0], errors
        assert (tmp_path / "twice" / "config.yaml").read_bytes() == before
    finally:
        kill_session(first)
    wanted = finished_trials(db) + 2  # the resume finishes the killed run's trials in flight and two more
    resumed = search(tmp_path, teacher_cache, f"trials={wanted}", "run=twice")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    table = pd.read_csv(tmp_path / "twice" / "trials.csv")
    finished = table[table["state"].isin(["COMPLETE", "FAIL"]) & ~table["error"].fillna("").str.startswith("re-run as")]
    assert len(finished) == wanted


def _folder_state(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("kind", ["corrupt", "foreign"])
def test_a_corrupt_or_foreign_study_db_is_refused_in_one_line_and_left_as_it_was(kind, tmp_path, teacher_cache, capsys):
    import optuna

    from search.__main__ import main

    folder = tmp_path / kind
    folder.mkdir()
    if kind == "corrupt":
        (folder / "study.db").write_bytes(b"not a database at all")
    else:  # another program's study: one objective
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        other = optuna.create_study(study_name="search", storage=f"sqlite:///{folder / 'study.db'}")
        other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    before = _folder_state(folder)
    assert main([f"results_dir={tmp_path}", f"run={kind}", "trials=2", f"workload.cache_dir={teacher_cache}",
                 "workload.epochs=15"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "study.db" in err[0], err
    assert _folder_state(folder) == before


@pytest.mark.slow
def test_a_driver_killed_in_the_retiming_phase_resumes_and_finishes_it(tmp_path, teacher_cache):
    """kill -9 while the front is re-timed: every file stays whole, and the same command finishes the phase."""
    quick = quick_overrides(tmp_path, teacher_cache)
    driver = subprocess.Popen([sys.executable, "-m", "search", *quick, "trials=4", "run=retime", "remeasure=true"],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        for line in driver.stderr:  # the phase says each member it re-timed: kill after the first
            if line.startswith("re-timing phase: 1/"):
                break
        else:
            pytest.fail("the search ended without a re-timing phase")
    finally:
        kill_session(driver)
    run = tmp_path / "retime"
    for table in ("trials.csv", "pareto.csv"):
        pd.read_csv(run / table)  # whole files: written to a temporary name and renamed
    assert not list(run.glob(".*.tmp"))
    resumed = search(tmp_path, teacher_cache, "trials=4", "run=retime", "remeasure=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    front = pd.read_csv(run / "pareto.csv")
    assert len(front) and front["final"].all()  # every member re-timed, the killed phase finished


_WRITER = """
import sys
from pathlib import Path
import pandas as pd
from search.results.tables import write_tables
run, rows = Path(sys.argv[1]), int(sys.argv[2])
version = 0
while True:  # the tables a driver writes, each version a different length, until killed
    version += 1
    table = pd.DataFrame({"trial": range(rows + version), "state": "COMPLETE", "accuracy": 0.5, "error": "x" * 40})
    write_tables(run, table, table.head(version))
    print(version, flush=True)
"""


def test_kill_9_while_the_tables_are_written_never_leaves_a_half_written_file(tmp_path):
    """The driver's own table writer, killed at random moments in the middle of its writes: every
    trials.csv and pareto.csv left behind is one whole version (and a resume clears the temporaries)."""
    import random

    rng = random.Random(0)
    run = tmp_path / "run"
    for _ in range(8):
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(run), "20000"], cwd=REPO, stdout=subprocess.PIPE,
                                  text=True)
        writer.stdout.readline()  # one whole version is on disk
        time.sleep(rng.uniform(0.0, 0.3))  # each write takes tens of ms: the kill lands inside one
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
        trials, front = pd.read_csv(run / "trials.csv"), pd.read_csv(run / "pareto.csv")
        assert len(trials) > 20000 and list(trials["trial"]) == list(range(len(trials)))
        assert (trials["error"] == "x" * 40).all() and 1 <= len(front) <= len(trials) - 20000 + 1
    assert list(run.glob(".*.tmp")), "no kill landed inside a write: the test proved nothing"
    from search.run.driver import clear_temporaries

    clear_temporaries(run)
    assert sorted(p.name for p in run.iterdir()) == ["pareto.csv", "trials.csv"]
