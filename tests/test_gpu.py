"""The GPU target end to end: CUDA provider for measurement, torch on CUDA for distillation, NVML energy."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import search

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_gpu_search_measures_on_cuda_with_nvml(tmp_path, teacher_cache):
    proc = search(tmp_path, teacher_cache, "+target=gpu", "trials=3", "workers=1", "run=g")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "g" / "trials.csv")
    done = table[table["state"] == "COMPLETE"]
    assert len(done) >= 2 and (done["target"] == "gpu").all()
    assert (done["energy_source"] == "nvml").all() and (done["energy_mj"] > 0).all()
