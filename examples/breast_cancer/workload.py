"""Bring your own model and data: an MLP on scikit-learn's breast-cancer table.

The whole contract is this one factory. It returns a ``Workload``: the trained model (any
``torch.nn.Module`` that maps float32 inputs to ``(batch, classes)`` logits) and the train /
validation / test splits as numpy arrays. The search prunes the hidden layers, distills the
pruned MLP back from this one, quantizes it (int4 applies: these are Linear layers), and
times it. Run it with:

    python -m search hydra.searchpath=[file://examples/breast_cancer/conf] workload=breast_cancer
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from torch import nn

from search.workloads import Split, Workload


def _splits(seed: int) -> tuple[Split, Split, Split]:
    """60 / 20 / 20, stratified; features standardized with the training split's statistics only."""
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-8

    def split(features: np.ndarray, labels: np.ndarray) -> Split:
        return Split(((features - mean) / std).astype(np.float32), labels.astype(np.int64))

    return split(x_train, y_train), split(x_val, y_val), split(x_test, y_test)


def _train(model: nn.Module, train: Split, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    for _ in range(epochs):  # full batch: 341 rows
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def load(seed: int = 0, hidden: int = 256, epochs: int = 150, distill_epochs: int = 30) -> Workload:
    train, val, test = _splits(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(train.x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 2))
    return Workload(
        name="breast-cancer-mlp", model=_train(model, train, epochs, seed), train=train, val=val, test=test,
        preprocessing="30 breast-cancer features, each standardized with the training split's mean and std",
        classifier="4",  # the last Linear: its 2 outputs are the classes, never pruned
        distill_epochs=distill_epochs, key=f"breast-cancer-mlp-{seed}-{hidden}-{epochs}",
    )
