"""A workload from a bare ONNX model file plus data: for models from other frameworks.

A TensorFlow/Keras model exported with tf2onnx, or any exporter's output, with one input and
one output of class scores. The data is one ``.npz`` file with arrays ``x_train``,
``y_train``, ``x_val``, ``y_val``, ``x_test``, ``y_test`` (inputs as the model takes them,
integer labels). Pruning and distillation need a torch module, so the search leaves them out
for this workload and says so at start; quantization, parallelism and targets are searched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx

from search.errors import ConfigError
from search.transforms.export import INPUT_NAME, OUTPUT_NAME
from search.workloads._base import Split, Workload

SPLITS = ("train", "val", "test")


def normalized(model: onnx.ModelProto, source: str) -> bytes:
    """The model with its input named ``input`` and output ``logits``, as the pipeline expects.

    A fixed batch dimension is refused: latency is measured on batches of ``batch_size``.
    """
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ConfigError(f"{source}: need one input and one output, found {len(inputs)} and {len(graph.output)}")
    batch = inputs[0].type.tensor_type.shape.dim[0] if inputs[0].type.tensor_type.shape.dim else None
    if batch is not None and batch.HasField("dim_value") and batch.dim_value != 0:
        raise ConfigError(f"{source}: the input's batch dimension is fixed at {batch.dim_value}; export it dynamic")
    renames = {inputs[0].name: INPUT_NAME, graph.output[0].name: OUTPUT_NAME}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    inputs[0].name, graph.output[0].name = INPUT_NAME, OUTPUT_NAME
    return model.SerializeToString()


def _splits(data_path: Path) -> dict[str, Split]:
    try:
        arrays = np.load(data_path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"workload data {data_path}: cannot read it as .npz: {exc}") from None
    missing = [f"{k}_{s}" for s in SPLITS for k in ("x", "y") if f"{k}_{s}" not in arrays]
    if missing:
        raise ConfigError(f"workload data {data_path}: missing arrays {', '.join(missing)}")
    return {s: Split(arrays[f"x_{s}"].astype(np.float32), arrays[f"y_{s}"].astype(np.int64)) for s in SPLITS}


def load(model_path: str, data_path: str, name: str | None = None, preprocessing: str = "") -> Workload:
    path = Path(model_path)
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception as exc:  # a missing file or bytes that are no ONNX: one line
        raise ConfigError(f"workload model {path}: cannot read it as ONNX: {type(exc).__name__}: {exc}") from None
    model_bytes = normalized(model, str(path))
    splits = _splits(Path(data_path))
    return Workload(name=name or path.stem, model=None, onnx_model=model_bytes, preprocessing=preprocessing,
                    key=f"onnx-{hashlib.sha1(model_bytes).hexdigest()[:12]}", **splits)
