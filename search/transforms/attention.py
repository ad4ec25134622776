"""Structured pruning of transformer encoders: whole attention heads and MLP width, hidden size kept.

torch-pruning removes the heads (``num_heads`` with ``prune_num_heads=True``) and the MLP's
inner neurons; the layers that write the residual stream are kept whole, so the hidden size,
the embeddings, every LayerNorm and the classifier stay as they were. Tried on Hugging Face
``BertForSequenceClassification`` (transformers 5.24, torch-pruning 1.6.1); the attribute names
below also cover RoBERTa/ELECTRA-style (``query``/``key``/``value``) and DistilBERT-style
(``q_lin``/``n_heads``) attention, which were not run.
"""

from __future__ import annotations

import copy
import math

import torch
import torch_pruning as tp
from torch import nn

QKV_NAMES = (("query", "key", "value"), ("q_lin", "k_lin", "v_lin"), ("q_proj", "k_proj", "v_proj"))
HEAD_COUNT_ATTRS = ("num_attention_heads", "n_heads", "num_heads")
HEAD_SIZE_ATTRS = ("attention_head_size", "head_dim")


def _qkv(module: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear] | None:
    for names in QKV_NAMES:
        found = [getattr(module, n, None) for n in names]
        if all(isinstance(m, nn.Linear) for m in found):
            return found[0], found[1], found[2]
    return None


def _head_attr(module: nn.Module) -> str | None:
    return next((a for a in HEAD_COUNT_ATTRS if isinstance(getattr(module, a, None), int)), None)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Modules with query/key/value Linear children and an int head count (BertSelfAttention and kin)."""
    return [m for m in model.modules() if _qkv(m) is not None and _head_attr(m) is not None]


def _head_size(module: nn.Module) -> int:
    size = next((getattr(module, a) for a in HEAD_SIZE_ATTRS if isinstance(getattr(module, a, None), int)), None)
    return size if size else _qkv(module)[0].out_features // getattr(module, _head_attr(module))


def find_attention_heads(model: nn.Module) -> dict[nn.Linear, int]:
    """Each attention's query, key and value Linear -> its head count (torch-pruning's ``num_heads``)."""
    heads: dict[nn.Linear, int] = {}
    for module in attention_modules(model):
        count = getattr(module, _head_attr(module))
        for linear in _qkv(module):
            heads[linear] = count
    return heads


def hidden_size(model: nn.Module) -> int:
    """The residual stream's width: the input width of the attention projections."""
    widths = {linear.in_features for linear in find_attention_heads(model)}
    if len(widths) != 1:
        raise ValueError(f"expected one hidden size over the attention projections, found {sorted(widths) or 'none'}")
    return widths.pop()


def residual_writers(model: nn.Module) -> list[nn.Module]:
    """Layers whose output has the hidden width, q/k/v excepted: the embeddings, each attention's
    output projection, each MLP's down projection (and a pooler, which is best kept whole too).

    Passed to torch-pruning as ``ignored_layers``, they keep the hidden size: their inputs may
    still shrink (a removed head drops its columns of the output projection)."""
    hidden, qkv = hidden_size(model), set(find_attention_heads(model))
    return [m for m in model.modules() if m not in qkv and (
        (isinstance(m, nn.Linear) and m.out_features == hidden)
        or (isinstance(m, nn.Embedding) and m.embedding_dim == hidden))]


def mlp_inputs(model: nn.Module) -> list[nn.Linear]:
    """Each MLP's up projection: hidden -> inner width, read back by a residual writer of that width."""
    hidden, qkv = hidden_size(model), set(find_attention_heads(model))
    inner = {m.in_features for m in residual_writers(model) if isinstance(m, nn.Linear)}
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m not in qkv and m.in_features == hidden
            and m.out_features != hidden and m.out_features in inner]


def sync_attention(model: nn.Module) -> None:
    """After pruning, set each attention module's head count (and ``all_head_size``) from its query
    Linear, in place. Head size is unchanged: heads are removed whole. ``model.config`` is not touched:
    it still names the original head count (a saved-and-reloaded model would be built unpruned)."""
    for module in attention_modules(model):
        query, size = _qkv(module)[0], _head_size(module)
        if query.out_features % size:
            raise ValueError(f"query width {query.out_features} is not a multiple of the head size {size}")
        setattr(module, _head_attr(module), query.out_features // size)
        if isinstance(getattr(module, "all_head_size", None), int):
            module.all_head_size = query.out_features


def _heads_removed(heads: int, rate: float) -> int:
    """Heads to remove so ``rate`` of them go, at least one kept."""
    kept = max(1, math.floor(round(heads * (1 - rate), 6)))
    return heads - kept


def prune_transformer(model: nn.Module, rate: float, example_inputs: dict[str, torch.Tensor],
                      keep: list[nn.Module], round_to: int | None = None, forward_fn=None) -> nn.Module:
    """A pruned deep copy of ``model``: ``rate`` of each attention's heads and of each MLP's inner
    width removed (at least one head kept), hidden size, embeddings and classifier unchanged.

    Only q/k/v (as whole heads) and the MLP up projections are pruning roots; every other Linear and
    Embedding, and ``keep`` (modules of ``model``, e.g. the classifier), are kept whole. Importance
    is the L2 norm. ``example_inputs`` are passed as ``model(**example_inputs)``; a ModelOutput is
    traced through all its tensors. The copy's attention attributes are synced; ``model`` is not
    modified (torch-pruning puts it in eval mode during tracing: the copy is).

    Tried on BertForSequenceClassification (transformers 5.24, torch-pruning 1.6.1).
    """
    if not 0 <= rate < 1:
        raise ValueError(f"prune rate must be in [0, 1), got {rate}")
    names = {id(m): name for name, m in model.named_modules()}
    missing = [m for m in keep if id(m) not in names]
    if missing:
        raise ValueError(f"keep holds {len(missing)} module(s) that are not part of the model")
    pruned = copy.deepcopy(model).cpu().eval()
    if rate == 0:
        return pruned
    heads = find_attention_heads(pruned)
    if not heads:
        raise ValueError("no attention module with query/key/value Linear children and a head count was found")
    roots = set(heads) | set(mlp_inputs(pruned))
    kept = [pruned.get_submodule(names[id(m)]) for m in keep]
    ignored = [m for m in pruned.modules() if isinstance(m, (nn.Linear, nn.Embedding)) and m not in roots]
    head_ratio = {m: (_heads_removed(h, rate) - 0.5) / h if _heads_removed(h, rate) else 0.0 for m, h in heads.items()}
    pruner = tp.pruner.BasePruner(
        pruned, example_inputs, importance=tp.importance.MagnitudeImportance(p=2, group_reduction="mean"),
        pruning_ratio=rate, ignored_layers=[*ignored, *kept], round_to=round_to,
        num_heads=dict(heads), out_channel_groups={},  # fresh dicts: the pruner mutates both (and the default)
        prune_num_heads=True, prune_head_dims=False, head_pruning_ratio_dict=head_ratio, forward_fn=forward_fn,
    )
    pruner.step()
    sync_attention(pruned)
    return pruned
