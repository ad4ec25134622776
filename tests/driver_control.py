"""Watching and stopping a ``python -m search`` driver from a test: its study.db read-only, its processes by session.

Only the public surface is used: the SQLite file Optuna writes (README: "study.db", the Optuna study)
and the process tree the command starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path


def _read_only(db: Path) -> sqlite3.Connection:
    # Read-only: opening the file with Optuna while the driver creates it races on Optuna's schema set-up.
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)


def running_trials(db: Path) -> dict[int, dict[str, float]]:
    """Trial number -> params recorded so far, of every trial study.db holds as RUNNING ({} before it has tables)."""
    if not db.exists():
        return {}
    try:
        with _read_only(db) as conn:
            running = conn.execute("SELECT trial_id, number FROM trials WHERE state = 'RUNNING'").fetchall()
            return {number: dict(conn.execute("SELECT param_name, param_value FROM trial_params WHERE trial_id = ?",
                                              (trial_id,)).fetchall())
                    for trial_id, number in running}
    except sqlite3.OperationalError:  # the tables are not made yet, or the file is being created
        return {}


def finished_trials(db: Path) -> int:
    """How many trials study.db holds as finished (COMPLETE or FAIL)."""
    with contextlib.closing(_read_only(db)) as conn:
        return conn.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'FAIL')").fetchone()[0]


def wait_for_running(proc: subprocess.Popen, db: Path, *, baseline_too: bool, timeout_s: float = 180) -> set[int]:
    """Waits until study.db holds a RUNNING trial (past the baseline unless ``baseline_too``) with its params
    recorded, seen in two polls half a second apart; returns those trial numbers. Fails if the driver ends first."""
    deadline, seen = time.monotonic() + timeout_s, set()
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the search ended before a trial was seen running"
        now = {n for n, params in running_trials(db).items() if params and (baseline_too or n > 0)}
        if now & seen:
            return now & seen
        seen = now
        time.sleep(0.5)
    raise AssertionError(f"no trial was seen running in {db} within {timeout_s:g} s")


def _session_of(pid: int) -> tuple[int, str] | None:
    """(session id, state) of a process, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
    return int(fields[3]), fields[0]


def session_processes(sid: int, named: str | None = None) -> list[int]:
    """Live (not zombie) processes of session ``sid`` (whose command line holds ``named``, if given).

    A driver started with ``start_new_session=True`` leads its own session; the private Ray it starts
    (GCS, raylet, dashboard, workers) stays in that session although Ray puts each worker in its own
    process group, so ``os.killpg`` on the driver's group alone leaves the workers behind.
    """
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _session_of(int(entry))
            if info and info[0] == sid and info[1] != "Z" and (named is None or named in _command(int(entry))):
                found.append(int(entry))
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_session(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGKILL a driver started with ``start_new_session=True``: its process group, then every process
    left in its session (the Ray processes it started), until none is left."""
    sid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, signal.SIGKILL)
    proc.wait(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    assert not session_processes(sid), f"processes of the killed search outlived it: {session_processes(sid)}"
