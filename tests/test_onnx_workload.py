"""A workload that is a bare ONNX file plus data: no torch module, so only quantization and parallelism are searched."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from search.core.errors import ConfigError
from search.workloads import check_workload
from search.workloads.onnx_file import load, normalized
from tests.conftest import tried, search
from tests.doc_commands import documented


def foreign_onnx(model: torch.nn.Module, x: np.ndarray, dynamic: bool = True) -> bytes:
    """The model as another exporter might write it: its own input and output names."""
    buffer = io.BytesIO()
    torch.onnx.export(model, torch.from_numpy(x[:1]), buffer, input_names=["images"], output_names=["scores"],
                      dynamic_axes={"images": {0: "n"}} if dynamic else None, dynamo=False)
    return buffer.getvalue()


@pytest.fixture()
def onnx_files(tmp_path, tiny_cnn, tiny_workload):
    """Writes the tiny CNN as a foreign ONNX file and its data as .npz, and forgets the torch module."""
    model_path, data_path = tmp_path / "tiny.onnx", tmp_path / "tiny.npz"
    model_path.write_bytes(foreign_onnx(tiny_cnn, tiny_workload.test.x))
    w = tiny_workload
    np.savez(data_path, x_train=w.train.x, y_train=w.train.y, x_val=w.val.x, y_val=w.val.y, x_test=w.test.x,
             y_test=w.test.y)
    return model_path, data_path


def test_loaded_onnx_workload_runs_under_the_pipelines_names(onnx_files, tiny_cnn, tiny_workload):
    workload = check_workload(load(str(onnx_files[0]), str(onnx_files[1])), "onnx_file.load")
    assert workload.is_onnx and workload.model is None and workload.name == "tiny"
    graph = onnx.load_model_from_string(workload.onnx_model).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    assert len(workload.test) == len(tiny_workload.test)


def test_a_fixed_batch_dimension_is_refused(tiny_cnn, tiny_workload):
    fixed = onnx.load_model_from_string(foreign_onnx(tiny_cnn, tiny_workload.test.x, dynamic=False))
    with pytest.raises(ConfigError, match="batch dimension is fixed at 1"):
        normalized(fixed, "fixed.onnx")


def test_data_missing_a_split_is_refused(onnx_files, tmp_path):
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((2, 1, 8, 8)), y_train=np.zeros(2))
    with pytest.raises(ConfigError, match="missing arrays x_val, x_test"):
        load(str(onnx_files[0]), str(partial))


@pytest.mark.slow
def test_search_on_a_bare_onnx_file_searches_quantization_and_parallelism_only(onnx_files, tmp_path):
    model_path, data_path = onnx_files
    command = documented("python -m search workload=onnx_file workload.model_path=model.onnx "
                         "workload.data_path=data.npz",
                         {"model.onnx": str(model_path), "data.npz": str(data_path)})
    proc = search(tmp_path, None, *command[3:], "trials=4", "workers=2", "run=onnx",
                  "space.knobs.quant_bits.choices=[32,8]")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("prune_rate and distillation are not searched") == 1, "said once, at start"
    table = tried(pd.read_csv(tmp_path / "onnx" / "trials.csv"))  # without draws re-asked as repeats
    assert len(table) == 4 and (table["state"] == "COMPLETE").all(), table["error"].tolist()
    assert (table["prune_rate"] == 0).all() and table["distill_temperature"].isna().all()
    baseline = table.loc[table["baseline"], "size_bytes"].iloc[0]
    assert baseline == pytest.approx(model_path.stat().st_size, rel=0.05)  # the user's model, renamed, as it came
