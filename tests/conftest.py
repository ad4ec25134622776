"""Shared fixtures: the real digits workload (teacher trained once per test session) and tiny models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from search.workloads import Split, Workload
from search.workloads import digits

REPO = Path(__file__).resolve().parent.parent


def tried(table):
    """The rows of trials that ran: without the draws re-asked before anything was built (a target that
    cannot run them, a prune value that builds another value's model), which are PRUNED rows."""
    reasked = (table["state"] == "PRUNED") & table["error"].fillna("").astype(str).str.contains("re-asked")
    return table[~reasked]


@pytest.fixture(scope="session")
def teacher_cache(tmp_path_factory) -> str:
    """One teacher cache for the whole session, so the digits teacher trains once (seconds)."""
    return str(tmp_path_factory.mktemp("teacher-cache"))


def quick_overrides(tmp_path: Path, teacher_cache: str | None) -> list[str]:
    """The overrides that shrink ``python -m search`` to a tiny CPU run (digits unless teacher_cache is None)."""
    # recovery_rungs=[]: a tiny run's trial count is exact; tests/test_rungs.py runs them on purpose
    quick = [f"results_dir={tmp_path}", "evaluators.latency.budget_s=0.2", "evaluators.energy.window_s=0.1",
             "recovery_rungs=[]"]
    if teacher_cache is not None:
        quick += [f"workload.cache_dir={teacher_cache}", "workload.epochs=15", "workload.distill_epochs=3"]
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


@pytest.fixture(scope="session")
def finished_digits_run(tmp_path_factory, teacher_cache) -> Path:
    """One small real search on the digits, shared by the tests that read a finished run folder."""
    return finished_run(tmp_path_factory, teacher_cache, "three", "trials=3")


@pytest.fixture(scope="session")
def digits_workload(teacher_cache) -> Workload:
    return digits.load(seed=0, epochs=15, cache_dir=teacher_cache, distill_epochs=3)


class TinyCNN(nn.Module):
    """Two convs and a Linear classifier on 1x8x8 inputs: small enough for sub-second transforms."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(16 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


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


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run where CUDA is present (the lent GPU machine) and are skipped, said so, elsewhere."""
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device with onnxruntime-gpu")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
