"""Faults injected for real into whole searches: a cluster node lost mid-run, a trial that exhausts memory.

Each test drives ``python -m search`` as a user does and reads only what the README says a run folder
holds (trials.csv, study.db read-only with sqlite3).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from tests.cluster_helpers import AUTH, start_cluster
from tests.conftest import REPO, quick_overrides, search, tried
from tests.driver_control import kill_session

pytestmark = pytest.mark.slow
HOG = "tests.plugins_for_tests.MemoryHog"
# How a trial whose worker or node died reads in trials.csv (search/run/cluster.py task_result: the Ray error's name
# and message), as seen: "WorkerCrashedError: The worker died unexpectedly ...", "NodeDiedError: Task failed because
# the node it was running on is dead ..."; a result lost with its node would be ObjectLostError or OwnerDiedError.
DIED = re.compile(r"^(WorkerCrashedError|NodeDiedError|ObjectLostError|OwnerDiedError|ObjectReconstructionFailed\w*):")


def finished_rows(run: Path) -> pd.DataFrame:
    """trials.csv without the rows a resume re-ran (README: marked ``re-run as a new trial``)."""
    table = tried(pd.read_csv(run / "trials.csv"))
    return table[~table["error"].fillna("").astype(str).str.startswith("re-run as")]


def study_snapshot(db: Path) -> tuple[dict[int, str], dict[int, list[float]]]:
    """(trial number -> state, COMPLETE trial number -> its objective values), read-only; ({}, {}) before the tables."""
    if not db.exists():
        return {}, {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            states = dict(conn.execute("SELECT number, state FROM trials").fetchall())
            values: dict[int, list[float]] = {}
            for number, _objective, value in conn.execute(
                    "SELECT t.number, v.objective, v.value FROM trials t "
                    "JOIN trial_values v ON v.trial_id = t.trial_id "
                    "WHERE t.state = 'COMPLETE' ORDER BY t.number, v.objective"):
                values.setdefault(number, []).append(value)
            return states, values
    except sqlite3.OperationalError:  # the file or its tables are being created
        return {}, {}


@pytest.fixture(scope="module")
def trained_teacher(digits_workload) -> None:
    """The digits teacher trained into the session's teacher cache before a test's search starts (4 s idle, up to
    45 s seen on 2 busy cores), so each test's own time is its search and its fault, not the one-off training."""


def trials_between(db: Path, start: datetime, end: datetime) -> set[int]:
    """Trials the driver asked for before ``end`` and had not been told of before ``start`` (study.db's own times)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        rows = conn.execute("SELECT number, datetime_start, datetime_complete FROM trials").fetchall()
    return {number for number, began, ended in rows
            if began and datetime.fromisoformat(began) <= end and (not ended or datetime.fromisoformat(ended) >= start)}


# --- a node of a real two-node cluster is lost mid-run -----------------------------------------------------

@pytest.mark.parametrize("retries", [2, 0])
def test_a_node_lost_mid_run_loses_no_finished_trial_and_the_search_finishes(tmp_path, teacher_cache, trained_teacher,
                                                                           retries):
    """The worker node (2 CPUs) is SIGKILLed, raylet and workers, while it runs a trial; the head (1 CPU) is left.

    With 2 trials in flight and 1 CPU on the head, one of them is on the worker node whenever two run. After the
    kill the head runs the rest. A trial lost with the node is re-run on the head under max_retries=2, and recorded
    as failed, with the reason it died, under max_retries=0.
    """
    trials = 6
    cluster = start_cluster(head_cpus=1, worker_cpus=[2])
    proc = None
    try:
        worker = cluster.nodes[1]
        worker_id = worker.node_id()
        run = tmp_path / "lost"
        db = run / "study.db"
        command = [sys.executable, "-m", "search", *quick_overrides(tmp_path, teacher_cache),
                   f"cluster.address={cluster.address}", "workers=2", f"trials={trials}", f"max_retries={retries}",
                   "run=lost", "seed=0", "remeasure=false"]
        with open(tmp_path / "driver.err", "w") as err:
            proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                    env={**os.environ, "PYTHONWARNINGS": "ignore", **AUTH})
        # Wait until a trial is finished (so there is something that must survive) and one runs on the worker node.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the search ended before the node was lost: {_tail(tmp_path / 'driver.err')}"
            _, values = study_snapshot(db)
            if values and worker.processes(named="ray::run_trial"):
                break
            time.sleep(0.2)
        _, before = study_snapshot(db)  # finished before the kill (the driver records a lost trial within a second)
        kill_start = datetime.now()  # naive local time, as Optuna stores a trial's start and end
        killed = worker.kill()
        kill_end = datetime.now()
        proc.wait(timeout=150)
        assert proc.returncode == 0, _tail(tmp_path / "driver.err")
    finally:
        if proc is not None and proc.poll() is None:
            kill_session(proc)
        cluster.stop()
    assert any("ray::run_trial" in c for c in killed.values()), f"no trial was running on the node killed: {killed}"
    assert any("raylet" in c for c in killed.values()), "the node's raylet was killed"

    table = finished_rows(run).set_index("trial")
    assert len(table) == trials, table[["state", "error"]]
    assert set(table["state"]) <= {"COMPLETE", "FAIL"}, table["state"].tolist()
    failed = table[table["state"] == "FAIL"]
    assert all(isinstance(e, str) and e for e in failed["error"]), "every failed trial says why"
    # finished before the kill: still COMPLETE, the same figures
    _, after = study_snapshot(db)
    assert before and all(after.get(n) == v for n, v in before.items()), (before, after)
    assert (table.loc[list(before), "state"] == "COMPLETE").all()
    # in flight when the node was lost (asked for before the kill ended, not told before it began): retried elsewhere
    # and completed, or failed because it died
    # (a draw re-asked at once, never built, is no trial in flight)
    in_flight = {n for n in trials_between(db, kill_start, kill_end) if n in table.index}
    assert in_flight, "a trial was in flight when the node was lost"
    for number in in_flight:
        row = table.loc[number]
        assert row["state"] == "COMPLETE" or DIED.search(str(row["error"])), (number, row["state"], row["error"])
    lost = table.loc[list(in_flight)]
    if retries:
        assert (lost["state"] == "COMPLETE").all(), lost[["state", "error"]]
    else:
        assert (lost["state"] == "FAIL").sum() >= 1, \
            f"max_retries=0, yet no lost trial failed: {lost[['state', 'error']]}"
    # the search went on without the lost node: every trial finished after the kill ran on the head
    later = table.drop(index=list(before) + list(in_flight))
    assert (later["state"] == "COMPLETE").any(), later[["state", "error"]]
    done_later = later[later["state"] == "COMPLETE"]
    assert not done_later["node"].astype(str).str.endswith("/" + worker_id[:8]).any(), done_later["node"].tolist()
    assert set(failed.index) <= in_flight, f"only trials lost with the node failed: {failed[['error']]}"


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


# --- a trial that exhausts memory --------------------------------------------------------------------------

def hog_overrides(marker: Path, on_limit: str) -> list[str]:
    """The test evaluator that exhausts memory (address space capped) for every 16-bit candidate, and no other."""
    return [f"+evaluators.hog._target_={HOG}", "+evaluators.hog.objective=false",
            f"+evaluators.hog.marker_dir={marker}",
            "+evaluators.hog.bits=16", f"+evaluators.hog.on_limit={on_limit}"]


@pytest.mark.parametrize("on_limit", ["raise", "sigkill"])
def test_a_trial_that_exhausts_memory_fails_alone_and_the_search_goes_on(tmp_path, teacher_cache, trained_teacher,
                                                                       on_limit):
    """``raise``: the allocation hits RLIMIT_AS and MemoryError leaves the evaluator (a Python error, never retried).
    ``sigkill``: the worker is SIGKILLed at the limit as the OOM killer would; Ray re-runs it max_retries times, then
    the trial fails as died. Either way that trial alone fails and the search finishes its trials."""
    trials, retries = 4, 2
    marker = tmp_path / "marker"
    # cover=true (the default): the 3 trials after the baseline measure each precision once, 16 bits included.
    proc = search(tmp_path, teacher_cache, f"trials={trials}", "workers=2", "run=hog", "seed=0", "remeasure=false",
                  f"max_retries={retries}", "space.knobs.quant_bits.choices=[32,16,8]",
                  "space.knobs.parallelism.modes=[sequential,intra_op]", *hog_overrides(marker, on_limit))
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = finished_rows(tmp_path / "hog")
    assert len(table) == trials, "the failed trial counts towards trials, and the search finished them"
    hogs = table[table["quant_bits"] == 16]
    assert len(hogs) >= 1, "a 16-bit trial ran"
    assert (hogs["state"] == "FAIL").all(), hogs[["trial", "state", "error"]]
    fired = [json.loads(line) for line in (marker / "fired.jsonl").read_text().splitlines()]
    assert {f["candidate"]["quant_bits"] for f in fired} == {16}
    if on_limit == "raise":
        assert hogs["error"].str.contains("MemoryError").all(), hogs["error"].tolist()
        assert len(fired) == len(hogs), "a Python error is never retried: the hog ran once per 16-bit trial"
    else:
        assert hogs["error"].apply(lambda e: bool(DIED.search(str(e)))).all(), hogs["error"].tolist()
        assert len(fired) == len(hogs) * (1 + retries), "re-run max_retries times, then failed"
        assert len({f["pid"] for f in fired}) == len(fired), "each run was a fresh worker"
    others = table.drop(hogs.index)
    assert len(others) >= 1 and (others["state"] == "COMPLETE").all(), others[["trial", "state", "error"]]
    assert (others["hog_bytes"] == 0).all()
