"""Shared fixtures: the real digits workload (teacher trained once per test session) and tiny models."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from search.testing import SmallCNN
from search.workloads import Split, Workload
from search.workloads import digits

REPO = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER"):
    # No test reads a timing as true: each xdist process's searches take a measurement lock of their own (the
    # searches it starts inherit the variable), instead of waiting while the other process's searches build.
    LOCK = f"optsearch-measure-{os.getuid()}-{os.environ['PYTEST_XDIST_WORKER']}.lock"
    os.environ.setdefault("OPTSEARCH_MEASURE_LOCK", str(Path(tempfile.gettempdir()) / LOCK))


def tried(table):
    """The rows of trials that ran: without the draws re-asked before anything was built (a target that
    cannot run them, a prune value that builds another value's model), which are PRUNED rows."""
    reasked = (table["state"] == "PRUNED") & table["error"].fillna("").astype(str).str.contains("re-asked")
    return table[~reasked]


def shared(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """A folder made once for the whole test session, pytest-xdist's workers included: the first to ask makes it
    (``make(folder)``), the others wait for it and reuse it. What it holds is read, never changed, by its users."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # each xdist worker has a basetemp of its own; their parent is the session's
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def teacher_cache(tmp_path_factory) -> str:
    """One teacher cache for the whole session, so the digits teacher trains once (seconds)."""
    def train(folder: Path) -> None:
        digits.load(seed=0, epochs=15, cache_dir=str(folder), distill_epochs=3)

    return str(shared(tmp_path_factory, "teacher-cache", train))


def quick_overrides(tmp_path: Path, teacher_cache: str | None) -> list[str]:
    """The overrides that shrink ``python -m search`` to a tiny CPU run (digits unless teacher_cache is None)."""
    # recovery_rungs=[]: a tiny run's trial count is exact; tests/test_rungs.py runs them on purpose
    # remeasure_sessions=2: a tiny run's few re-timed trials would get 4 (tests/test_figures_hold.py runs those)
    # remeasure_quiet_s=0: the suite's other process keeps the node busy, and nobody reads a test's timings
    # remeasure=false: the re-timing phase (two fresh processes a run) is a third of a tiny run's CPU; the tests that
    # read it, and the runs whose path through it differs (a cluster, two targets, tracking, custom evaluators),
    # ask for it with remeasure=true
    # distill_epochs=1: recovery was two thirds of a pruned trial's time, and no test reads how well it recovers
    quick = [f"results_dir={tmp_path}", "evaluators.latency.budget_s=0.2", "evaluators.energy.window_s=0.05",
             "recovery_rungs=[]", "remeasure=false", "remeasure_sessions=2", "remeasure_quiet_s=0"]
    if teacher_cache is not None:
        quick += [f"workload.cache_dir={teacher_cache}", "workload.epochs=15", "workload.distill_epochs=1"]
    return quick


def search(tmp_path: Path, teacher_cache: str | None, *overrides: str, env: dict | None = None
           ) -> subprocess.CompletedProcess:
    """``python -m search`` as a user runs it, shrunk to a tiny CPU run (digits unless teacher_cache is None)."""
    return subprocess.run([sys.executable, "-m", "search", *quick_overrides(tmp_path, teacher_cache), *overrides],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})


def finished_run(tmp_path_factory, teacher_cache: str, name: str, *overrides: str) -> Path:
    """A real search on the digits, run to the end in a folder of its own: ``results/<name>``."""
    results = tmp_path_factory.mktemp("results")
    proc = search(results, teacher_cache, "workers=2", f"run={name}", "seed=0", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results / name


# the shared run's command, beside quick_overrides (its re-timing sessions as a default run chooses them)
DIGITS_RUN = ("workers=2", "run=three", "seed=0", "trials=3", "remeasure=true", "remeasure_sessions=null")


@pytest.fixture(scope="session")
def finished_digits_run(tmp_path_factory, teacher_cache) -> Path:
    """One small real search on the digits, shared by the tests that read a finished run folder
    (``python -m search`` with DIGITS_RUN); what it printed is kept beside it (``digits_run_output``)."""
    def run(results: Path) -> None:
        proc = search(results, teacher_cache, *DIGITS_RUN)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (results / "stdout.txt").write_text(proc.stdout)
        (results / "stderr.txt").write_text(proc.stderr)

    return shared(tmp_path_factory, "digits-run", run) / "three"


def copy_run(run: Path, to: Path) -> Path:
    """A copy of a finished run folder that a test may change: without SQLite's -wal and -shm files, which a
    reader of study.db in another process (another xdist worker) may hold open, empty, at that moment (a
    finished driver has merged its log into study.db)."""
    return Path(shutil.copytree(run, to, ignore=shutil.ignore_patterns("*.db-wal", "*.db-shm")))


@pytest.fixture(scope="session")
def digits_run_output(finished_digits_run) -> tuple[str, str]:
    """(stdout, stderr) of the shared digits run's command."""
    return ((finished_digits_run.parent / "stdout.txt").read_text(),
            (finished_digits_run.parent / "stderr.txt").read_text())


@pytest.fixture(scope="session")
def digits_workload(teacher_cache) -> Workload:
    return digits.load(seed=0, epochs=15, cache_dir=teacher_cache, distill_epochs=3)


TinyCNN = SmallCNN  # two convs and a Linear classifier on 1x8x8 inputs: sub-second transforms (search.testing's)


class ConvOnly(nn.Module):
    """No Linear, no MatMul: int4 weight-only has nothing to apply to."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 10, 1),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture()
def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture()
def conv_only() -> nn.Module:
    torch.manual_seed(0)
    return ConvOnly().eval()


@pytest.fixture()
def tiny_workload(tiny_cnn) -> Workload:
    """Random data in the digits layout: for plumbing, not for accuracy claims."""
    rng = np.random.default_rng(0)

    def split(n: int) -> Split:
        return Split(rng.random((n, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64))

    return Workload(name="tiny", model=tiny_cnn, train=split(128), val=split(32), test=split(64),
                    classifier="head", distill_epochs=1, key="tiny")


def _has_cuda() -> bool:
    import onnxruntime as ort

    return torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()


# Test files that run whole searches, longest first (the suite's own --durations): xdist hands out files in the
# order collected, so the long ones start first and the short ones fill in at the end instead of a long one
# running alone at the end. A file not named keeps its place after these.
LONGEST_FIRST = ("test_faults.py", "test_run_guard.py", "test_promises.py", "test_search_runs.py", "test_user_code.py",
                 "test_examples.py", "test_targets_and_modes.py", "test_tracking.py", "test_custom_plugins.py",
                 "test_cluster.py", "test_text_workload.py", "test_bundle.py", "test_pick.py")


def pytest_collection_modifyitems(config, items):
    """Long files first (see LONGEST_FIRST); `gpu` tests run where CUDA is present (the lent GPU machine) and are
    skipped, said so, elsewhere."""
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests stay in order
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device with onnxruntime-gpu")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
