"""The bring-your-own example runs exactly as the README says."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from examples.breast_cancer.workload import load
from tests.conftest import search

pytestmark = pytest.mark.slow
README_OVERRIDES = ["hydra.searchpath=[file://examples/breast_cancer/conf]", "workload=breast_cancer"]


def test_example_factory_returns_a_trained_model_on_its_own_splits():
    workload = load(seed=0, epochs=60)
    import torch

    with torch.no_grad():
        accuracy = (workload.model(torch.from_numpy(workload.test.x)).argmax(1).numpy() == workload.test.y).mean()
    assert accuracy > 0.9 and workload.input_shape == (30,)
    assert len(workload.train) + len(workload.val) + len(workload.test) == 569


def test_example_search_runs_from_the_readme_command(tmp_path):
    proc = search(tmp_path, None, *README_OVERRIDES, "workload.epochs=60", "workload.distill_epochs=5", "trials=4",
                  "workers=2", "run=byo", "space.knobs.quant_bits.choices=[32,4]")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(tmp_path / "byo" / "trials.csv")
    assert len(table) == 4 and (table["state"] == "COMPLETE").all(), table["error"].tolist()
    front = pd.read_csv(tmp_path / "byo" / "pareto.csv")
    card = json.loads((tmp_path / "byo" / "models" / f"trial-{front['trial'].iloc[0]}.json").read_text())
    assert card["workload"] == "breast-cancer-mlp" and card["input"]["shape"] == ["batch", 30]
    four_bit = table[table["quant_bits"] == 4]
    assert len(four_bit) >= 1, "the cover trials measure 4 bits"
    baseline_size = table.loc[table["baseline"], "size_bytes"].iloc[0]
    # int4 really applies to Linear layers: the file is much smaller (pruning, where sampled, only shrinks it more)
    assert (four_bit["size_bytes"] < baseline_size / 3).all()
