"""How a user's torch model is called and what it returns, one convention for every step.

A model with one input is called ``model(x)``; a model with several is called with them as
keyword arguments, ``model(**inputs)`` (the names are its ``forward``'s parameters, as Hugging
Face models take ``input_ids`` and ``attention_mask``). Whatever it returns — a tensor, a tuple,
a dict or a Hugging Face ``ModelOutput`` — is flattened to its tensors in order; a dict's keys
name them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def call(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """The model's outputs for ``inputs``, flattened to a list of tensors."""
    if len(inputs) == 1:
        return flatten(model(next(iter(inputs.values()))))
    return flatten(model(**inputs))


def flatten(out: Any) -> list[torch.Tensor]:
    """The tensors of a model's return value, in order (a ModelOutput's None fields are absent)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in flatten(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in flatten(v)]
    return []


def output_names(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the model's outputs: a dict's keys, ``logits`` for a single tensor, else ``output_<i>``."""
    with torch.no_grad():
        out = model.eval()(**inputs) if len(inputs) > 1 else model.eval()(next(iter(inputs.values())))
    if isinstance(out, Mapping) and all(isinstance(v, torch.Tensor) for v in out.values()):
        return [str(k) for k in out]
    count = len(flatten(out))
    return ["logits"] if count == 1 else [f"output_{i}" for i in range(count)]


def to_tensors(arrays: Mapping[str, np.ndarray], device: str = "cpu") -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(a)).to(device) for name, a in arrays.items()}


class NamedIO(nn.Module):
    """The model as the ONNX exporter needs it: positional inputs in ``names`` order, a tuple of tensors out."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(call(self.model, dict(zip(self.names, tensors, strict=True))))


def run_torch(model: nn.Module, inputs: Mapping[str, np.ndarray], names: Sequence[str],
              batch_size: int = 256) -> dict[str, np.ndarray]:
    """The model's outputs by name on ``inputs`` (whole arrays, in batches), as numpy."""
    rows = len(next(iter(inputs.values())))
    parts: list[list[np.ndarray]] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, rows, batch_size):
            chunk = to_tensors({k: v[start:start + batch_size] for k, v in inputs.items()})
            parts.append([t.detach().cpu().numpy() for t in call(model, chunk)])
    return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}
