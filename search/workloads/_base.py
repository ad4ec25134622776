"""The workload contract: what a user's factory must return."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from search.errors import ConfigError


@dataclass
class Split:
    """Inputs (float32, model layout) and integer class labels."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"split has {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Workload:
    """A trained classifier and its data, as a factory under ``conf/workload`` returns it.

    Attributes:
        name: short name, used in cache keys and model cards.
        model: the trained model (the teacher), in eval mode, on the CPU.
        train: training split: distillation and int8 calibration draw from it.
        val: validation split: picks the best distillation epoch.
        test: held-out split: accuracy is measured on it and only on it.
        preprocessing: what a caller must do to raw input before the model (for the card).
        classifier: name of the output layer, kept out of pruning (None: the last Linear).
        distill_epochs: epochs of recovery training after pruning.
        distill_lr: learning rate of that training.
        key: identifies model and data for stage caches (same key, same teacher); empty: the name.
        onnx_model: the model as ONNX bytes instead of ``model`` (None), for models from other
            frameworks: input ``input``, output ``logits``, dynamic batch (see onnx_file.py).
            Pruning and distillation need a torch module, so they are not searched for it.
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

    def __post_init__(self) -> None:
        self.key = self.key or self.name

    @property
    def is_onnx(self) -> bool:
        """True for a bare ONNX model: nothing torch-side (pruning, distillation) applies."""
        return self.onnx_model is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        return tuple(self.test.x.shape[1:])


def check_workload(obj: object, factory: str) -> Workload:
    """Check what a workload factory returned; a mismatch is a config error naming the factory."""
    if not isinstance(obj, Workload):
        raise ConfigError(f"workload factory {factory} returned {type(obj).__name__}, expected search.workloads.Workload")
    if not obj.is_onnx and not isinstance(obj.model, nn.Module):
        raise ConfigError(f"workload {obj.name}: model is {type(obj.model).__name__}, expected a torch.nn.Module")
    for split_name in ("train", "val", "test"):
        split = getattr(obj, split_name)
        if not isinstance(split, Split) or len(split) == 0:
            raise ConfigError(f"workload {obj.name}: {split_name} split is empty or not a Split")
    sample = np.ascontiguousarray(obj.test.x[:2], dtype=np.float32)
    try:
        out = _run_onnx(obj.onnx_model, sample) if obj.is_onnx else _run_torch(obj.model, sample)
    except Exception as exc:  # the user's model and data disagree: say so in one line
        message = " ".join(str(exc).split())[:300]
        raise ConfigError(f"workload {obj.name}: model rejects test input of shape {sample.shape}: {message}") from None
    if out.ndim != 2:
        raise ConfigError(f"workload {obj.name}: model output has shape {tuple(out.shape)}, expected (batch, classes)")
    return obj


def _run_torch(model: nn.Module, sample: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(sample)).numpy()


def _run_onnx(model_bytes: bytes, sample: np.ndarray) -> np.ndarray:
    from search.transforms.export import INPUT_NAME, OUTPUT_NAME

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: sample})[0]


def predict_classes(workload: Workload) -> int:
    """How many classes the model scores (the width of its output)."""
    sample = np.ascontiguousarray(workload.test.x[:1], dtype=np.float32)
    out = _run_onnx(workload.onnx_model, sample) if workload.is_onnx else _run_torch(workload.model, sample)
    return int(out.shape[1])


def check_exportable(workload: Workload) -> None:
    """Export the teacher once at start: a model ONNX cannot express fails here, not in every trial."""
    from search.transforms.export import export_onnx

    if workload.is_onnx:
        return
    try:
        with _native_output_silenced():  # on failure torch's C++ side dumps its whole IR graph to stdout
            export_onnx(workload.model, torch.from_numpy(np.ascontiguousarray(workload.test.x[:1], dtype=np.float32)))
    except Exception as exc:  # torch names the unsupported operator (and often the layer) in its message
        raise ConfigError(f"workload {workload.name}: model cannot be exported to ONNX: {exc}") from None


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
