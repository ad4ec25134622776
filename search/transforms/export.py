"""ONNX export with dynamic batch (and declared) axes, checked by loading it in a plain ONNX Runtime session."""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from search.workloads.calling import NamedIO

INPUT_NAME = "input"  # a one-input model's input, and its output, keep today's names
OUTPUT_NAME = "logits"
OPSET = 17


def export_onnx(model: nn.Module, example: Mapping[str, torch.Tensor] | torch.Tensor,
                output_names: Sequence[str] = (OUTPUT_NAME,),
                axes: Mapping[str, Mapping[int, str]] | None = None) -> bytes:
    """Export ``model`` to ONNX bytes: inputs named as ``example``'s keys (a bare tensor is ``input``),
    outputs as ``output_names``, weights inline, the batch axis and the ``axes`` given dynamic."""
    example = {INPUT_NAME: example} if isinstance(example, torch.Tensor) else dict(example)
    model = _eager_attention(model)
    output_names = list(output_names)
    dynamic = {name: {0: "batch", **{int(k): str(v) for k, v in (axes or {}).get(name, {}).items()}}
               for name in example}
    dynamic.update({name: {0: "batch"} for name in output_names})
    buffer = io.BytesIO()
    # The TorchScript exporter is ~50x faster than dynamo here and keeps weights inline;
    # it warns that it is deprecated, which says nothing about this model.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            NamedIO(model.cpu().eval(), list(example)),
            tuple(example.values()),
            buffer,
            input_names=list(example),
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def _eager_attention(model: nn.Module) -> nn.Module:
    """A Hugging Face model exported with eager attention: ORT's transformer fusion recognises its
    attention pattern (not the SDPA export's), and it ran as fast or faster unfused (a copy: the
    call changes the model's config in place)."""
    if not hasattr(model, "set_attn_implementation"):
        return model
    eager = copy.deepcopy(model)
    try:
        eager.set_attn_implementation("eager")
    except (ValueError, ImportError):  # a model that has no eager implementation exports as it is
        return model
    return eager


def check_onnx(model_bytes: bytes, sample: Mapping[str, np.ndarray] | np.ndarray) -> None:
    """Load the model in a plain CPU session and run one batch (inputs by name, or the one input's
    array); raise if either fails."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    if not isinstance(sample, Mapping):
        sample = {session.get_inputs()[0].name: np.asarray(sample, dtype=np.float32)}
    rows = len(next(iter(sample.values())))
    for output in session.run(None, dict(sample)):
        if output.ndim == 0 or output.shape[0] != rows:
            raise RuntimeError(f"exported model gave an output of shape {output.shape} for a batch of {rows}")
        if output.dtype.kind == "f" and not np.all(np.isfinite(output)):
            raise RuntimeError("exported model gave non-finite outputs")
