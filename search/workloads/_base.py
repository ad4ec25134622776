"""The workload contract: what a user's factory (or ``search.optimize``) hands the search.

A workload is a trained model plus train/val/test splits. A split's inputs are one array (the
model's only input, named ``input``) or a dict of named arrays (float, int64 or bool; the first
axis is the batch), its labels an array, a dict of arrays, or None for a metric that needs no
labels. Its quality is measured by a metric plugin (search/metrics.py; accuracy by default).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
from torch import nn

from search.core.errors import ConfigError
from search.core.metrics import Metric, default_metric
from search.runtime.portable import batch_of
from search.workloads.calling import output_names, run_torch, to_tensors

INPUT_NAME = "input"  # the name of a model's only input when the split gives one array
DTYPE_KINDS = {"f": "float", "i": "int", "u": "int", "b": "bool"}


def _as_inputs(x: Any) -> dict[str, np.ndarray]:
    if isinstance(x, Mapping):
        return {str(k): np.asarray(v) for k, v in x.items()}
    # one array: today's README's Split(x, y), a float32 input in the model's layout
    return {INPUT_NAME: np.asarray(x, dtype=np.float32) if np.asarray(x).dtype.kind == "f" else np.asarray(x)}


@dataclass
class Split:
    """A split's inputs and labels.

    Attributes:
        x: one array (the model's only input) or a dict of named arrays, batch first.
        y: labels: an array, a dict of arrays, or None (a metric that compares with the original
            model only, like cosine fidelity).
    """

    x: Any
    y: Any = None

    def __post_init__(self) -> None:
        self.inputs = _as_inputs(self.x)
        if not self.inputs:
            raise ValueError("split has no inputs")
        lengths = {name: len(a) if a.ndim else 0 for name, a in self.inputs.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"split inputs have different lengths: {lengths}")
        for name, array in self.inputs.items():
            if array.dtype.kind not in DTYPE_KINDS:
                raise ValueError(f"input {name} has dtype {array.dtype}; inputs are float, int or bool arrays")
        rows = next(iter(lengths.values()))
        for name, labels in _label_arrays(self.y).items():
            if len(labels) != rows:
                raise ValueError(f"split has {rows} inputs but {len(labels)} labels" + (f" in {name}" if name else ""))

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Inputs of rows ``start`` to ``stop``, contiguous (what a session is fed)."""
        return {k: np.ascontiguousarray(v[start:stop]) for k, v in self.inputs.items()}

    def batch_of(self, size: int) -> dict[str, np.ndarray]:
        """The first ``size`` rows, repeated when the split has fewer: one inference call's input."""
        return batch_of(self.inputs, size)

    def labels(self, index: np.ndarray | slice) -> Any:
        """The labels of ``index`` in the split's own form (array, dict or None)."""
        if self.y is None:
            return None
        if isinstance(self.y, Mapping):
            return {k: np.asarray(v)[index] for k, v in self.y.items()}
        return np.asarray(self.y)[index]


def _label_arrays(y: Any) -> dict[str, np.ndarray]:
    if y is None:
        return {}
    if isinstance(y, Mapping):
        return {str(k): np.asarray(v) for k, v in y.items()}
    return {"": np.asarray(y)}


@dataclass
class Workload:
    """A trained model and its data, as a factory under ``conf/workload`` returns it.

    Attributes:
        name: short name, used in cache keys and model cards.
        model: the trained model (the teacher), in eval mode, on the CPU.
        train: training split: distillation and int8 calibration draw from it.
        val: validation split: picks the best distillation epoch.
        test: held-out split: the metric is measured on it and only on it.
        preprocessing: what a caller must do to raw input before the model (for the card).
        classifier: name of the output layer, kept out of pruning (None: the last Linear).
        distill_epochs: epochs of recovery training after pruning.
        distill_lr: learning rate of that training.
        key: identifies model and data for stage caches (same key, same teacher); empty: the name.
        onnx_model: the model as ONNX bytes instead of ``model`` (None), for models from other
            frameworks (see onnx_file.py). Pruning and distillation need a torch module, so
            they are not searched for it.
        metric: the task metric (search/metrics.py); None: accuracy.
        axes: symbolic axes of each input besides the batch, e.g. ``{"input_ids": {1: "sequence"}}``;
            the exported model keeps them dynamic and the card names them.
        input_notes: per input, what it holds and how it is made (a tokenizer and its maximum length).
        output_notes: per output, what it means.
        keep: names (fnmatch patterns) of layers whose outputs pruning never removes.
        batch_size: rows per training batch (recovery training).
    """

    name: str
    model: nn.Module | None
    train: Split
    val: Split
    test: Split
    preprocessing: str = ""
    classifier: str | None = None
    distill_epochs: int = 10
    distill_lr: float = 2e-3
    key: str = ""
    onnx_model: bytes | None = None
    metric: Metric | None = None
    axes: dict[str, dict[int, str]] = field(default_factory=dict)
    input_notes: dict[str, str] = field(default_factory=dict)
    output_notes: dict[str, str] = field(default_factory=dict)
    keep: list[str] = field(default_factory=list)
    batch_size: int = 64
    # filled by check_workload: the model's output names, and its test outputs when the metric compares with them
    output_names: list[str] = field(default_factory=list)
    reference: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.key = self.key or self.name
        self.metric = self.metric or default_metric()

    @property
    def is_onnx(self) -> bool:
        """True for a bare ONNX model: nothing torch-side (pruning, distillation) applies."""
        return self.onnx_model is not None

    @property
    def input_names(self) -> list[str]:
        return list(self.test.inputs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of the first input, without the batch dimension."""
        return tuple(next(iter(self.test.inputs.values())).shape[1:])

    def input_specs(self) -> list[dict[str, Any]]:
        """Each input's name, dtype and shape, symbolic axes named (``batch`` first)."""
        specs = []
        for name, array in self.test.inputs.items():
            axes = {0: "batch", **{int(k): str(v) for k, v in self.axes.get(name, {}).items()}}
            shape = [axes.get(i, size) for i, size in enumerate(array.shape)]
            note = self.input_notes.get(name, "") or (self.preprocessing if len(self.test.inputs) == 1 else "")
            specs.append({"name": name, "dtype": str(array.dtype), "shape": shape,
                          "measured_shape": list(array.shape[1:]), "preprocessing": note})
        return specs

    def outputs(self, model_bytes: bytes | None, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The original model's outputs by name (torch, or the ONNX bytes given)."""
        if self.is_onnx or model_bytes is not None:
            return run_onnx(model_bytes or self.onnx_model, inputs)
        return run_torch(self.model, inputs, self.output_names or output_names(self.model, to_tensors(
            {k: v[:1] for k, v in inputs.items()})))


def run_onnx(model_bytes: bytes, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All outputs by name of a plain one-thread CPU session."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(inputs)), strict=True))


def check_workload(obj: object, factory: str, keep_reference: bool = False) -> Workload:
    """Check what a workload factory returned, and fill what follows from the model (output names, and the
    original model's test outputs when its metric compares with them or ``keep_reference``: an evaluator of
    the run reads them). A mismatch is one line naming it."""
    if not isinstance(obj, Workload):
        raise ConfigError(f"workload factory {factory} returned {type(obj).__name__}, "
                          "expected search.workloads.Workload")
    if not obj.is_onnx and not isinstance(obj.model, nn.Module):
        raise ConfigError(f"workload {obj.name}: model is {type(obj.model).__name__}, expected a torch.nn.Module")
    if not isinstance(obj.metric, Metric):
        raise ConfigError(f"workload {obj.name}: metric is {type(obj.metric).__name__}, "
                          "expected a search.metrics.Metric")
    for split_name in ("train", "val", "test"):
        split = getattr(obj, split_name)
        if not isinstance(split, Split) or len(split) == 0:
            raise ConfigError(f"workload {obj.name}: {split_name} split is empty or not a Split")
        _check_same_inputs(obj, split_name, split)
    obj.output_names = _output_names(obj)
    outputs = _original_outputs(obj)
    try:
        obj.metric.check(outputs, obj.test.y)
    except ConfigError as exc:
        raise ConfigError(f"workload {obj.name}: {exc}") from None
    except Exception as exc:  # the user's metric raised on the original model's outputs
        raise ConfigError(f"workload {obj.name}: metric {obj.metric.name} fails on the original model's test "
                          f"outputs: {type(exc).__name__}: {_one_line(exc)}") from None
    obj.reference = outputs if obj.metric.needs_reference or keep_reference else None
    return obj


def _check_same_inputs(workload: Workload, split_name: str, split: Split) -> None:
    expected = {k: v.dtype for k, v in workload.test.inputs.items()}
    found = {k: v.dtype for k, v in split.inputs.items()}
    if set(found) != set(expected):
        raise ConfigError(f"workload {workload.name}: {split_name} split has inputs {sorted(found)}, "
                          f"the test split {sorted(expected)}")
    differ = [f"{k} is {found[k]} (test: {expected[k]})" for k in expected if found[k] != expected[k]]
    if differ:
        raise ConfigError(f"workload {workload.name}: {split_name} split: {'; '.join(differ)}")


def _output_names(workload: Workload) -> list[str]:
    sample = workload.test.rows(0, 2)
    try:
        if workload.is_onnx:
            return list(run_onnx(workload.onnx_model, sample))
        return output_names(workload.model, to_tensors(sample))
    except Exception as exc:  # the user's model and data disagree: say so in one line
        shapes = ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in sample.items())
        what = f"of shape {tuple(next(iter(sample.values())).shape)}" if len(sample) == 1 else f"({shapes})"
        raise ConfigError(f"workload {workload.name}: model rejects test input {what}: {_one_line(exc)}") from None


def _original_outputs(workload: Workload) -> dict[str, np.ndarray]:
    try:
        return workload.outputs(None, workload.test.inputs)
    except Exception as exc:
        raise ConfigError(f"workload {workload.name}: model fails on the test split: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def check_exportable(workload: Workload) -> None:
    """Export the teacher once at start, from one row, and run the export on three: a model ONNX
    cannot express, or one whose export fixed the batch size (a shape traced as a constant),
    fails here, not in every trial."""
    from search.transforms.export import check_onnx, export_onnx

    if workload.is_onnx:
        return
    try:
        with _native_output_silenced():  # on failure torch's C++ side dumps its whole IR graph to stdout
            model_bytes = export_onnx(workload.model, to_tensors(workload.train.rows(0, 1)), workload.output_names,
                                      workload.axes)
    except Exception as exc:  # torch names the unsupported operator (and often the layer) in its message
        raise ConfigError(f"workload {workload.name}: model cannot be exported to ONNX: {exc}") from None
    try:
        check_onnx(model_bytes, workload.train.rows(0, 3))
    except Exception as exc:
        raise ConfigError(f"workload {workload.name}: the ONNX export of one row does not run on three (a shape "
                          f"fixed at export?): {_one_line(exc)}") from None


def describe(workload: Workload) -> dict[str, Any]:
    """What a results folder keeps of the workload: its inputs, outputs and metric, for cards and pick."""
    specs = workload.input_specs()
    sample = workload.outputs(None, workload.test.rows(0, 2))
    outputs = [{"name": name, "dtype": str(value.dtype), "shape": ["batch", *value.shape[1:]],
                "meaning": workload.output_notes.get(name, "")} for name, value in sample.items()]
    first = specs[0]
    return {"name": workload.name, "input_name": first["name"], "input_shape": first["shape"][1:],
            "inputs": specs, "outputs": outputs, "output_name": outputs[0]["name"],
            "output_meaning": outputs[0]["meaning"] or _meaning(workload, sample),
            "preprocessing": workload.preprocessing, "metric": workload.metric.describe(),
            "transformer": has_attention(workload)}


def has_attention(workload: Workload) -> bool:
    """Whether the model has attention (a transformer): knobs such as fusion apply only then."""
    if workload.is_onnx:
        import onnx

        ops = {node.op_type for node in onnx.load_from_string(workload.onnx_model).graph.node}
        return "Softmax" in ops and bool(ops & {"LayerNormalization", "ReduceMean"})
    from search.transforms.attention import find_attention_heads

    return bool(find_attention_heads(workload.model))


def _meaning(workload: Workload, sample: Mapping[str, np.ndarray]) -> str:
    first = next(iter(sample.values()))
    if workload.metric.loss == "cross_entropy" and first.ndim == 2:
        return f"scores over {first.shape[1]} classes; argmax is the predicted class"
    return f"read by the metric {workload.metric.name}"


@contextlib.contextmanager
def _native_output_silenced() -> Iterator[None]:
    """Mute file descriptors 1 and 2, which C++ code writes to behind Python's back."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
