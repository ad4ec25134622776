"""Bring your own embedding model: a small sentence encoder with two int64 inputs and no labels.

The model maps ``input_ids`` and ``attention_mask`` (int64, batch x sequence, as a Hugging Face
tokenizer gives them) to one named output, ``embedding`` (batch x 64): token embeddings, one
transformer block, then the mean over the real tokens (the mask) and a projection, as
sentence-transformers models pool. What matters in a compressed embedding model is that it
points where the original did, so its metric is ``search.metrics.CosineFidelity`` (from the
config): the mean cosine similarity of each test sentence's embedding to the original model's.
It needs no labels: every split's ``y`` is None, and recovery after pruning trains the pruned
encoder towards the original's embeddings (cosine loss).

The sentences are real prose that ships with Python (standard-library docstrings, see
search/workloads/text.py). To be a meaningful trained encoder rather than random weights, it is
trained once on a proxy task, the docstring's topic, through a linear head on the pooled
embedding; the head is dropped afterwards. That takes about 10 s here on first use and is
cached with its tokenizer in ~/.cache/optsearch. Run it with:

    python -m search 'hydra.searchpath=[file://examples/embedding/conf]' workload=embedding
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

from search.metrics import CosineFidelity, Metric
from search.transforms.training import train_classifier
from search.workloads import Split, Workload
from search.workloads.digits import save_weights
from search.workloads.text import tokenized

ARCH_VERSION = "embedding-encoder-v1"  # bump when the encoder or the data recipe changes


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate ``query``/``key``/``value`` Linear layers and an int
    ``num_heads``: the layout the search's transformer pruning recognises (it removes whole heads and
    then updates ``num_heads``). ``nn.MultiheadAttention`` is not used: its fused projection is not
    pruned by heads, and its TorchScript export fixes the batch and sequence lengths it was traced with."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.output = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length = h.shape[0], h.shape[1]

        def heads(x: torch.Tensor) -> torch.Tensor:  # -1: the head count after pruning
            return x.view(batch, length, -1, self.head_dim).transpose(1, 2)

        scores = heads(self.query(h)) @ heads(self.key(h)).transpose(-1, -2) / math.sqrt(self.head_dim)
        context = (scores + bias).softmax(dim=-1) @ heads(self.value(h))
        return self.output(context.transpose(1, 2).reshape(batch, length, -1))


class Block(nn.Module):
    """A post-LayerNorm transformer block (BERT's layout): attention, then a GELU MLP, each residual."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention, self.attention_norm = SelfAttention(dim, heads), nn.LayerNorm(dim)
        self.up, self.down, self.mlp_norm = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.attention_norm(h + self.dropout(self.attention(h, bias)))
        return self.mlp_norm(h + self.dropout(self.down(F.gelu(self.up(h)))))


class SentenceEncoder(nn.Module):
    """Token + position embeddings, ``layers`` blocks, mean pooling over real tokens, a projection."""

    def __init__(self, vocab_size: int, max_length: int = 32, dim: int = 64, heads: int = 4, layers: int = 1,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab_size, dim), nn.Embedding(max_length, dim)
        self.register_buffer("position_ids", torch.arange(max_length), persistent=False)
        self.norm, self.dropout = nn.LayerNorm(dim), nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.project = nn.Linear(dim, dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        positions = self.position_ids[:input_ids.shape[1]]  # a sequence is at most max_length tokens
        h = self.dropout(self.norm(self.tokens(input_ids) + self.positions(positions)))
        mask = attention_mask.to(h.dtype)
        bias = (1.0 - mask)[:, None, None, :] * -1e4  # padding gets no attention (-1e4 also fits fp16)
        for block in self.blocks:
            h = block(h, bias)
        weights = mask.unsqueeze(-1)
        pooled = (h * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # mean over real tokens
        return {"embedding": self.project(pooled)}  # a dict: the output is named ``embedding``


class _TopicProbe(nn.Module):
    """The proxy task the encoder is trained on: a linear topic head on the embedding (dropped after)."""

    def __init__(self, encoder: SentenceEncoder, topics: int) -> None:
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(encoder.project.out_features, topics)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(input_ids, attention_mask)["embedding"])


def load(seed: int = 0, epochs: int = 15, distill_epochs: int = 3, cache_dir: str | None = None,
         max_length: int = 32, vocab_size: int = 2000, dim: int = 64, heads: int = 4, layers: int = 1,
         metric: Metric | None = None) -> Workload:
    """The workload; the encoder is trained on first use and cached (``cache_dir``; None: ~/.cache/optsearch)."""
    metric = metric or CosineFidelity()
    data = tokenized("embedding-encoder", f"{ARCH_VERSION}:{epochs}:{dim}:{heads}:{layers}", seed, max_length,
                     vocab_size, cache_dir)
    key, inputs, weights, vocabulary, tokenizer = data.key, data.inputs, data.weights, data.vocabulary, data.tokenizer
    torch.manual_seed(seed)
    model = SentenceEncoder(len(tokenizer), max_length, dim, heads, layers)
    if weights.exists():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    else:
        print(f"training the embedding encoder once on the topic proxy task ({len(inputs[0]['input_ids'])} "
              f"sentences, {epochs} epochs); cached in {weights}", file=sys.stderr, flush=True)
        probe = _TopicProbe(model, len(data.topics))  # trained on one thread: train_classifier sees to it
        train_classifier(probe, Split(inputs[0], data.labels[0]), Split(inputs[1], data.labels[1]), epochs=epochs,
                         lr=2e-3, seed=seed, batch_size=32)
        save_weights(model, weights)
    ids_note = (f"WordPiece ids of the lower-cased sentence ([CLS] text [SEP]), padded with 0 or cut to at most "
                f"{max_length} tokens (the position table's length); vocabulary of {len(tokenizer)} tokens trained "
                "on the train split")
    return Workload(
        name="sentence-embedding",
        model=model.eval(),
        train=Split(inputs[0]), val=Split(inputs[1]), test=Split(inputs[2]),  # y=None: no labels
        preprocessing=f"tokenize with the WordPiece tokenizer in {vocabulary} (transformers.BertTokenizerFast("
                      f"tokenizer_file=...)), padding to max_length {max_length}; see search.workloads.text.encode",
        classifier="project",  # the embedding's own width is kept (pruning removes heads and MLP width)
        metric=metric,
        distill_epochs=distill_epochs,
        distill_lr=1e-3,
        key=key,
        axes={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}},
        input_notes={"input_ids": ids_note, "attention_mask": "1 for a real token, 0 for padding"},
        output_notes={"embedding": f"sentence embedding ({dim} values): the mean of the encoder's outputs over the "
                                   "real tokens, projected; compare sentences by cosine similarity"},
        batch_size=32,
    )
