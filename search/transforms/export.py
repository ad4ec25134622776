"""ONNX export with a dynamic batch dimension, checked by loading it in a plain ONNX Runtime session."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """Export ``model`` to ONNX bytes (weights inline, batch dimension dynamic)."""
    buffer = io.BytesIO()
    # The TorchScript exporter is ~50x faster than dynamo here and keeps weights inline;
    # it warns that it is deprecated, which says nothing about this model.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.cpu().eval(),
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def check_onnx(model_bytes: bytes, sample: np.ndarray) -> None:
    """Load the model in a plain CPU session and run one batch; raise if either fails."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: sample.astype(np.float32)})
    if out.shape[0] != sample.shape[0] or not np.all(np.isfinite(out)):
        raise RuntimeError(f"exported model gave output of shape {out.shape} with non-finite values or wrong batch")
