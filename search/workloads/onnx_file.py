"""A workload from a bare ONNX model file plus data: for models from other frameworks.

A TensorFlow/Keras model exported with tf2onnx, or any exporter's output. The data is one
``.npz`` file (plain arrays; it is loaded without pickle):

* a model with several inputs: one array per input and split, named ``<input>_<split>``
  (``input_ids_train``, ``attention_mask_test``), of the dtype the model takes;
* a model with one input may instead give ``x_train``, ``x_val``, ``x_test`` (today's format);
* labels ``y_train``, ``y_val``, ``y_test``; a metric that needs none (fidelity) may leave them out.

The task metric is the workload's ``metric`` (accuracy by default). Pruning and distillation
need a torch module, so the search leaves them out for this workload and says so at start;
quantization, parallelism and targets are searched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx

from search.core.errors import ConfigError
from search.core.metrics import Metric
from search.transforms.export import INPUT_NAME, OUTPUT_NAME
from search.workloads._base import Split, Workload

SPLITS = ("train", "val", "test")
ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32",
               onnx.TensorProto.BOOL: "bool", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.DOUBLE: "float64"}


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def normalized(model: onnx.ModelProto, source: str, rename: bool = True) -> bytes:
    """The model, checked: every input's batch dimension must be dynamic (latency is measured on
    batches of ``batch_size``). With ``rename``, a one-input one-output model takes today's
    names, ``input`` and ``logits``."""
    graph = model.graph
    inputs = graph_inputs(model)
    if not inputs or not graph.output:
        raise ConfigError(f"{source}: the model has no inputs or no outputs")
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value != 0:
            raise ConfigError(f"{source}: input {value.name}'s batch dimension is fixed at {dims[0].dim_value}; "
                              "export it dynamic")
    if rename and len(inputs) == 1 and len(graph.output) == 1:
        renames = {inputs[0].name: INPUT_NAME, graph.output[0].name: OUTPUT_NAME}
        for node in graph.node:
            node.input[:] = [renames.get(n, n) for n in node.input]
            node.output[:] = [renames.get(n, n) for n in node.output]
        inputs[0].name, graph.output[0].name = INPUT_NAME, OUTPUT_NAME
    return model.SerializeToString()


def _array(arrays: np.lib.npyio.NpzFile, key: str, dtype: str | None, source: Path) -> np.ndarray:
    value = arrays[key]
    if dtype is not None and value.dtype != np.dtype(dtype):
        if not np.can_cast(value.dtype, dtype, casting="same_kind"):
            raise ConfigError(f"workload data {source}: {key} is {value.dtype}, the model's input takes {dtype}")
        value = value.astype(dtype)
    return value


def _splits(data_path: Path, inputs: dict[str, str | None], legacy: bool) -> dict[str, Split]:
    try:
        arrays = np.load(data_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"workload data {data_path}: cannot read it as .npz: {exc}") from None
    keys = {name: ["x"] if legacy else [name] for name in inputs}
    missing = [f"{k}_{s}" for s in SPLITS for name in inputs for k in keys[name] if f"{k}_{s}" not in arrays]
    if missing:
        raise ConfigError(f"workload data {data_path}: missing arrays {', '.join(missing)} "
                          f"(the model's inputs are {', '.join(inputs)})")
    labelled = [s for s in SPLITS if f"y_{s}" in arrays]
    if labelled and len(labelled) != len(SPLITS):
        raise ConfigError(f"workload data {data_path}: labels for {', '.join(labelled)} only; give y_train, y_val "
                          "and y_test, or none for a metric that needs no labels")
    splits = {}
    for s in SPLITS:
        x = {name: _array(arrays, f"{keys[name][0]}_{s}", dtype, data_path) for name, dtype in inputs.items()}
        try:
            splits[s] = Split(x, arrays[f"y_{s}"] if labelled else None)
        except ValueError as exc:
            raise ConfigError(f"workload data {data_path}: {s} split: {exc}") from None
    return splits


def load(model_path: str, data_path: str, name: str | None = None, preprocessing: str = "",
         metric: Metric | None = None) -> Workload:
    path = Path(model_path)
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception as exc:  # a missing file or bytes that are no ONNX: one line
        raise ConfigError(f"workload model {path}: cannot read it as ONNX: {type(exc).__name__}: {exc}") from None
    try:
        with np.load(data_path, allow_pickle=False) as arrays:
            legacy = "x_train" in arrays.files and len(graph_inputs(model)) == 1
    except (OSError, ValueError) as exc:
        raise ConfigError(f"workload data {data_path}: cannot read it as .npz: {exc}") from None
    model_bytes = normalized(model, str(path), rename=legacy)
    model = onnx.load_model_from_string(model_bytes)
    inputs = {i.name: ONNX_DTYPES.get(i.type.tensor_type.elem_type) for i in graph_inputs(model)}
    splits = _splits(Path(data_path), inputs, legacy)
    return Workload(name=name or path.stem, model=None, onnx_model=model_bytes, preprocessing=preprocessing,
                    key=f"onnx-{hashlib.sha1(model_bytes).hexdigest()[:12]}", metric=metric, **splits)
