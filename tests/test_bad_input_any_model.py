"""Bad input about the user's own model, data and metric ends like any other: one ``error:`` line, exit 2.

Each case is a real command (``search.__main__.main``) on a tiny workload that is wrong in one way:
a bare ONNX model with two named inputs and an .npz that lacks one or gives it the wrong dtype, a
metric that returns NaN or raises, splits that disagree, an output the metric cannot read. Every
case runs with ``run=x`` where ``results/x`` already holds a file: a run that cannot start leaves an
existing folder exactly as it was, and creates nothing beside it.
"""

from __future__ import annotations

from pathlib import Path

import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from search.__main__ import main
from search.core.errors import ConfigError
from search.workloads import check_workload

SPLIT_ROWS = {"train": 16, "val": 8, "test": 8}


def two_input_onnx() -> bytes:
    """``logits = (features + float(ids)) @ W``: float ``features`` and int64 ``ids``, 4 wide, dynamic batch."""
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["features", "ids_f"], ["h"]),
         helper.make_node("MatMul", ["h", "W"], ["logits"])],
        "two_inputs",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 4]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def npz_arrays(ids_dtype: str = "int64", labels: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SPLIT_ROWS.items():
        arrays[f"features_{split}"] = rng.normal(size=(n, 4)).astype(np.float32)
        arrays[f"ids_{split}"] = rng.integers(0, 5, (n, 4)).astype(ids_dtype)
        if labels:
            arrays[f"y_{split}"] = rng.integers(0, 3, n).astype(np.int64)
    return arrays


@pytest.fixture()
def onnx_case(tmp_path):
    """Writes the two-input model and an .npz built from ``npz_arrays`` (edited by ``change``); returns overrides."""

    def make(change=None, **kwargs) -> list[str]:
        model, data = tmp_path / "two.onnx", tmp_path / "two.npz"
        model.write_bytes(two_input_onnx())
        arrays = npz_arrays(**kwargs)
        if change:
            change(arrays)
        np.savez(data, **arrays)
        return ["workload=onnx_file", f"workload.model_path={model}", f"workload.data_path={data}"]

    return make


def _drop(key):
    return lambda arrays: arrays.pop(key)


def _short_labels(arrays):
    arrays["y_test"] = arrays["y_test"][:-1]


ONNX_CASES = {  # id: (make's arguments, extra overrides, what the line says)
    "npz missing a named input": (dict(change=_drop("ids_test")), [], "missing arrays ids_test"),
    "npz input of the wrong dtype": (dict(ids_dtype="float32"), [],
                                     "ids_train is float32, the model's input takes int64"),
    "npz labels shorter than inputs": (dict(change=_short_labels), [], "test split: split has 8 inputs but 7 labels"),
    "npz without labels, accuracy": (dict(labels=False), [], "metric accuracy needs labels"),
    "config metric returns NaN": (
        {}, ["workload.metric={_target_:search.metrics.FromFunction,fn:tests.workloads._nan,name:nanny}"],
        "metric nanny returned nan"),
    "config metric fn does not exist": (
        {}, ["workload.metric={_target_:search.metrics.FromFunction,fn:tests.workloads.no_such_fn,name:f}"],
        "tests.workloads.no_such_fn"),
    "config metric fn is not callable": (
        {}, ["workload.metric={_target_:search.metrics.FromFunction,fn:tests.workloads.NOT_CALLABLE,name:f}"],
        "fn must be a callable"),
    "config metric target unknown": ({}, ["workload.metric={_target_:search.metrics.NoSuchMetric}"], "NoSuchMetric"),
    "config metric reads an output the model lacks": (
        {}, ["workload.metric={_target_:search.metrics.Accuracy,output:scores}"], "the model has no output 'scores'"),
    "config metric given as a bare name": ({}, ["workload.metric=macro_f1"],
                                           "metric is str, expected a search.metrics"),
}

FACTORY_CASES = {  # tests.workloads factory (extra overrides): what the line says
    "metric_nan": "metric nanny returned nan on the original model's test outputs",
    "metric_raises": "metric boom fails on the original model's test outputs: ZeroDivisionError: the user's metric",
    "metric_not_a_number": "metric two_values fails on the original model's test outputs: TypeError",
    "length_mismatch": "split has 16 inputs but 15 labels",
    "input_lengths_differ": "split inputs have different lengths",
    "input_names_differ": "train split has inputs ['features', 'mask'], the test split ['features', 'flags']",
    "input_dtypes_differ": "train split: mask is bool (test: int64)",
    "one_array_for_two_inputs": "model rejects test input of shape (2, 4)",
    "flat_output_accuracy": "metric accuracy: the output has shape (8,), expected (batch, classes)",
    "mse_width_mismatch": "metric mse: output has 3 value(s) per row, labels have 2",
    "no_labels": "metric accuracy needs labels (y)",
}

CONFIG_METRIC_CASES = {  # the well-formed tiny_mlp factory, handed a metric from config
    "metric fn path does not exist": (["+workload.metric._target_=search.metrics.FromFunction",
                                       "+workload.metric.fn=no_such_package.metrics.f1", "+workload.metric.name=f1"],
                                      "metric fn 'no_such_package.metrics.f1' cannot be imported"),
    "metric target unknown": (["+workload.metric._target_=search.metrics.F2Score"], "search.metrics.F2Score"),
    "metric fn raises": (["+workload.metric._target_=search.metrics.FromFunction",
                          "+workload.metric.fn=tests.workloads._raises", "+workload.metric.name=boom"],
                         "ZeroDivisionError"),
}


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def fails_in_one_line(overrides: list[str], tmp_path: Path, capfd, monkeypatch) -> str:
    """Runs the command with run=x over an existing results/x; returns the one stderr line."""
    monkeypatch.chdir(tmp_path)  # any folder a bug might create lands here
    results = tmp_path / "results"
    (results / "x").mkdir(parents=True)
    (results / "x" / "notes.txt").write_text("mine, keep\n")
    before, results_before = snapshot(results / "x"), snapshot(results)
    capfd.readouterr()
    code = main([*overrides, "trials=2", "run=x", f"results_dir={results}"])
    out, err = capfd.readouterr()  # file descriptors: native code writing behind Python's back counts too
    lines = err.strip().splitlines()
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert snapshot(results / "x") == before, "the existing run folder was changed"
    assert snapshot(results) == results_before, "something was created beside the existing run folder"
    assert {p.name for p in tmp_path.iterdir()} <= {"results", "two.onnx", "two.npz"}, "nothing written in the cwd"
    return lines[0]


@pytest.mark.parametrize("case", list(ONNX_CASES))
def test_bare_onnx_model_with_bad_data_or_metric(case, onnx_case, tmp_path, capfd, monkeypatch):
    make_args, extra, says = ONNX_CASES[case]
    line = fails_in_one_line([*onnx_case(**make_args), *extra], tmp_path, capfd, monkeypatch)
    assert says in line, line


@pytest.mark.parametrize("factory", list(FACTORY_CASES))
def test_torch_model_with_bad_data_or_metric(factory, tmp_path, capfd, monkeypatch):
    line = fails_in_one_line(["~workload", f"+workload._target_=tests.workloads.{factory}"], tmp_path, capfd,
                             monkeypatch)
    assert FACTORY_CASES[factory] in line, line


@pytest.mark.parametrize("case", list(CONFIG_METRIC_CASES))
def test_metric_from_config_that_cannot_be_made_or_run(case, tmp_path, capfd, monkeypatch):
    extra, says = CONFIG_METRIC_CASES[case]
    line = fails_in_one_line(["~workload", "+workload._target_=tests.workloads.tiny_mlp", *extra], tmp_path, capfd,
                             monkeypatch)
    assert says in line, line


def test_the_good_two_input_onnx_data_is_accepted(onnx_case, tmp_path):
    """The control for the cases above: the same model and data, unbroken, pass the checks."""
    from search.workloads.onnx_file import load

    overrides = onnx_case()
    workload = check_workload(load(overrides[1].split("=", 1)[1], overrides[2].split("=", 1)[1]), "onnx_file.load")
    assert workload.input_names == ["features", "ids"] and workload.test.inputs["ids"].dtype == np.int64


def test_the_good_tiny_torch_workload_is_accepted():
    from tests.workloads import tiny_mlp

    assert check_workload(tiny_mlp(), "tests.workloads.tiny_mlp").output_names == ["logits"]


def test_class_labels_shaped_batch_by_one_score_as_one_class_per_row_and_wider_ones_are_refused():
    """y.reshape(-1, 1) is one class per row: scored as such, never broadcast into a (batch, batch) comparison."""
    from search.core.metrics import Accuracy, MacroF1

    outputs = {"logits": np.eye(3)[[0, 1, 2, 0]]}
    column = np.array([[0], [1], [2], [0]])
    assert Accuracy().score(outputs, column) == 1.0 and MacroF1().score(outputs, column) == 1.0
    with pytest.raises(ConfigError, match="one class per row"):
        Accuracy().score(outputs, np.zeros((4, 2), dtype=np.int64))


# --- a results folder on a full or read-only disk --------------------------------------------------

@pytest.fixture(params=[False, True], ids=["full", "read-only"])
def small_disk(tmp_path, request):
    """A tmpfs with a run folder ``x`` holding one file: 1 MiB (full for a run), or 128 MiB made
    read-only; skipped where mounting is not allowed."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    size = "128m" if request.param else "1m"
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root and a mount namespace that allows it")
    (mount_point / "x").mkdir()
    (mount_point / "x" / "notes.txt").write_text("mine")
    if request.param:
        subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
    yield mount_point, request.param
    subprocess.run(["umount", str(mount_point)], capture_output=True)


def _unchanged(folder):
    return sorted((p.name, p.read_bytes()) for p in folder.iterdir())


def test_a_results_folder_on_a_full_or_read_only_disk_is_one_line(small_disk, capfd):
    small_disk, read_only = small_disk
    before = _unchanged(small_disk / "x")
    assert main([f"results_dir={small_disk}", "run=x", "trials=2"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert ("Read-only file system" if read_only else "KiB free on its disk") in err[0]
    assert _unchanged(small_disk / "x") == before and [p.name for p in small_disk.iterdir()] == ["x"]
