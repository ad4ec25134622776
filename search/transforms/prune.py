"""Structured pruning with torch-pruning: channels and neurons are removed, so the graph shrinks."""

from __future__ import annotations

import copy
import hashlib
import fnmatch
from collections.abc import Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from search.transforms.attention import find_attention_heads, prune_transformer
from search.workloads.calling import call


def _output_layer(model: nn.Module, name: str | None) -> nn.Module:
    """The layer whose outputs are the classes; pruning it would drop classes."""
    if name is not None:
        return model.get_submodule(name)
    linears = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not linears:
        raise ValueError("model has no Linear or Conv2d layer to keep as the classifier")
    return linears[-1]


def kept_layers(model: nn.Module, patterns: Sequence[str]) -> list[nn.Module]:
    """The modules whose names match ``patterns`` (fnmatch): their outputs are never pruned."""
    return [m for name, m in model.named_modules() if name and any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def prune(
    model: nn.Module, rate: float, example: Mapping[str, torch.Tensor] | torch.Tensor, classifier: str | None = None,
    round_to: int | None = None, keep: Sequence[str] = (),
) -> nn.Module:
    """Return a copy of ``model`` with ``rate`` of the channels of every prunable layer removed.

    With ``round_to``, each layer keeps a multiple of that many channels (hardware-friendly
    widths), so the removed share is close to, not exactly, ``rate``.

    Importance is the L2 norm of each channel's weights; layers coupled through residual
    adds or concatenations are pruned together (torch-pruning's dependency graph).
    """
    if not 0 <= rate < 1:
        raise ValueError(f"prune rate must be in [0, 1), got {rate}")
    inputs = {"input": example} if isinstance(example, torch.Tensor) else dict(example)
    if find_attention_heads(model):  # a transformer: whole heads and MLP width go, the hidden size stays
        kept = [_output_layer(model, classifier), *kept_layers(model, keep)]
        return prune_transformer(model, rate, inputs, kept, round_to, forward_fn=lambda m, x: call(m, x))
    pruned = copy.deepcopy(model).cpu().eval()
    if rate == 0:
        return pruned
    pruner = tp.pruner.BasePruner(
        pruned,
        inputs,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=rate,
        ignored_layers=[_output_layer(pruned, classifier), *kept_layers(pruned, keep)],
        round_to=round_to,
        forward_fn=lambda m, x: call(m, x),  # one input positionally, several by name (calling.py)
    )
    pruner.step()
    return pruned


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _widths(model: nn.Module, classifier: str | None, keep: Sequence[str] = ()) -> dict[str, int]:
    """Output channels (or features) of every prunable layer, by name."""
    fixed = [_output_layer(model, classifier), *kept_layers(model, keep)]
    return {name: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not any(m is f for f in fixed)}


def removed_share(original: nn.Module, pruned: nn.Module, classifier: str | None = None,
                  keep: Sequence[str] = ()) -> float:
    """The share of prunable channels really removed: rounding moves it off the asked rate, and at
    high rates torch-pruning may leave whole layers unpruned (seen: rate 0.8, round_to 16)."""
    before, after = _widths(original, classifier, keep), _widths(pruned, classifier, keep)
    total = sum(before.values())
    return 1 - sum(after.get(name, 0) for name in before) / total if total else 0.0


def weights_digest(model: nn.Module) -> str:
    """A digest of every parameter and buffer (names, shapes, values): equal digests, equal models."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        values = tensor.detach().cpu().contiguous()
        digest.update((values.float() if values.dtype == torch.bfloat16 else values).numpy().tobytes())
    return digest.hexdigest()
