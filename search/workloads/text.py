"""Bundled text workload: a small BERT classifying real English sentences by topic.

The data is the first paragraph of every public docstring of 50 standard-library modules, each
labelled with the topic its module belongs to (files, text, network, numbers). It is real
prose written by people, it ships with every Python (nothing is downloaded at run time), and
the task is not trivial: "Return the number of bytes written" could be a file or a socket.
A sentence found under two topics is dropped. The split is stratified and fixed by the seed.

The tokenizer is a WordPiece vocabulary trained on the train split only (Hugging Face
``tokenizers``); the model is ``transformers``' ``BertForSequenceClassification`` (2 layers,
4 heads, hidden 64), trained on first use (about a minute here) and cached like the digits
teacher. Inputs are ``input_ids`` and ``attention_mask`` (int64, batch x sequence), padded to
``max_length``; the exported model keeps both axes dynamic.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search.transforms.training import train_classifier
from search.workloads._base import Split, Workload
from search.workloads.digits import save_weights, default_cache_dir

ARCH_VERSION = "text-bert-v1"  # bump when the model or data recipe changes
TOPICS = {
    "files": ("os", "os.path", "shutil", "pathlib", "glob", "tempfile", "stat", "io", "fileinput", "zipfile",
              "tarfile", "filecmp", "fnmatch"),
    "text": ("re", "string", "textwrap", "difflib", "unicodedata", "codecs", "html", "html.parser", "locale",
             "gettext", "shlex", "pprint", "reprlib"),
    "network": ("socket", "ssl", "http.client", "http.server", "http.cookies", "urllib.request", "urllib.parse",
                "email.message", "email.utils", "smtplib", "ftplib", "imaplib", "poplib", "xmlrpc.client",
                "ipaddress", "socketserver"),
    "numbers": ("math", "cmath", "decimal", "fractions", "random", "statistics", "datetime", "time", "calendar",
                "numbers", "operator"),
}
MIN_WORDS = 4


def _first_paragraph(obj: object) -> str | None:
    doc = inspect.getdoc(obj)
    return " ".join(doc.strip().split("\n\n")[0].split()) if doc else None


def _module_sentences(module_name: str) -> set[str]:
    """First paragraphs of the module's public functions, classes and their public members."""
    module = importlib.import_module(module_name)
    found: set[str] = set()
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue  # constants and submodules (which appear once imported anywhere) are not its text
        if getattr(obj, "__module__", None) != module.__name__:
            continue  # what a module imports from elsewhere is that other module's text
        members = [obj, *(v for k, v in vars(obj).items() if not k.startswith("_"))] if inspect.isclass(obj) else [obj]
        found.update(filter(None, map(_first_paragraph, members)))
    return {s for s in found if len(s.split()) >= MIN_WORDS}


def sentences() -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, topic labels, topic names), sorted so the order is the same on every run."""
    by_topic = {topic: set().union(*map(_module_sentences, modules)) for topic, modules in TOPICS.items()}
    seen_twice = {s for a in by_topic for b in by_topic if a < b for s in by_topic[a] & by_topic[b]}
    names = list(TOPICS)
    pairs = sorted((s, names.index(t)) for t, texts in by_topic.items() for s in texts - seen_twice)
    return [s for s, _ in pairs], np.array([label for _, label in pairs], dtype=np.int64), names


def make_tokenizer(texts: list[str], vocab_size: int, path: Path):
    """A lower-cased WordPiece tokenizer trained on ``texts`` (the train split), kept in ``path``.

    Training is not deterministic (tokens of equal frequency come in any order), so the tokenizer
    is made once and stored with the teacher that learned its ids; later runs load the file (JSON).
    """
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    if not path.exists():
        wordpiece = BertWordPieceTokenizer(lowercase=True)
        wordpiece.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, show_progress=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        wordpiece.save(str(temporary))
        temporary.replace(path)
    return BertTokenizerFast(tokenizer_file=str(path), pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]")


def encode(tokenizer, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    return {"input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64)}


def make_model(vocab_size: int, classes: int, max_length: int, hidden: int, layers: int, heads: int):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * hidden, max_position_embeddings=max_length, num_labels=classes,
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    torch.manual_seed(0)
    return BertForSequenceClassification(config)


@dataclass
class Tokenized:
    """The sentences split 70 / 10 / 20 (stratified by topic), tokenized by the tokenizer kept beside a model.

    Attributes:
        key: identifies data, recipe and seed: the model's and tokenizer's file names carry it.
        inputs: ``input_ids`` and ``attention_mask`` of the train, val and test splits.
        labels: the topics of the same rows.
    """

    key: str
    inputs: list[dict[str, np.ndarray]]
    labels: list[np.ndarray]
    topics: list[str]
    weights: Path
    vocabulary: Path
    tokenizer: Any


def tokenized(model_name: str, recipe: str, seed: int, max_length: int, vocab_size: int,
              cache_dir: str | None) -> Tokenized:
    """The split sentences, tokenized; the tokenizer file is made anew whenever the model's weights are."""
    from sklearn.model_selection import train_test_split  # here: the workers that unpickle the model never split

    texts, labels, topics = sentences()
    index = np.arange(len(texts))
    rest, test = train_test_split(index, test_size=0.2, random_state=seed, stratify=labels)
    train, val = train_test_split(rest, test_size=0.125, random_state=seed, stratify=labels[rest])
    data_hash = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    key = hashlib.sha256(f"{recipe}:{seed}:{max_length}:{vocab_size}:{data_hash}".encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    weights, vocabulary = folder / f"{model_name}-{key}.pt", folder / f"{model_name}-tokenizer-{key}.json"
    if not weights.exists():
        vocabulary.unlink(missing_ok=True)  # a new model learns a new tokenizer's ids
    tokenizer = make_tokenizer([texts[i] for i in train], vocab_size, vocabulary)
    parts = (train, val, test)
    return Tokenized(key, [encode(tokenizer, [texts[i] for i in part], max_length) for part in parts],
                     [labels[part] for part in parts], topics, weights, vocabulary, tokenizer)


def load(seed: int = 0, epochs: int = 25, cache_dir: str | None = None, distill_epochs: int = 3,
         max_length: int = 48, vocab_size: int = 2000, hidden: int = 64, layers: int = 2, heads: int = 4) -> Workload:
    """The text workload; the teacher is trained on first use and cached on this machine."""
    data = tokenized("text-teacher", f"{ARCH_VERSION}:{epochs}:{hidden}:{layers}:{heads}", seed, max_length,
                     vocab_size, cache_dir)
    key, weights, vocabulary, tokenizer, topics = data.key, data.weights, data.vocabulary, data.tokenizer, data.topics
    splits = [Split(x, y) for x, y in zip(data.inputs, data.labels, strict=True)]
    model = make_model(len(tokenizer), len(topics), max_length, hidden, layers, heads)
    if weights.exists():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    else:
        print(f"training the text teacher once ({len(splits[0])} sentences, {epochs} epochs); cached in {weights}",
              file=sys.stderr, flush=True)
        train_classifier(model, splits[0], splits[1], epochs=epochs, lr=2e-3, seed=seed, batch_size=32)
        save_weights(model, weights)
    ids_note = (f"WordPiece ids of the lower-cased sentence ([CLS] text [SEP]), padded or cut to {max_length}; "
                f"vocabulary of {len(tokenizer)} tokens trained on the train split (python {sys.version.split()[0]})")
    return Workload(
        name="text",
        model=model.eval(),
        train=splits[0],
        val=splits[1],
        test=splits[2],
        preprocessing=f"tokenize with the WordPiece tokenizer in {vocabulary} (transformers.BertTokenizerFast"
                      f"(tokenizer_file=...)), padding to max_length {max_length}",
        classifier="classifier",
        distill_epochs=distill_epochs,
        distill_lr=1e-3,
        key=key,
        axes={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}},
        input_notes={"input_ids": ids_note, "attention_mask": "1 for a real token, 0 for padding"},
        output_notes={"logits": f"scores over the topics {topics}; argmax is the predicted topic"},
        batch_size=32,
    )
