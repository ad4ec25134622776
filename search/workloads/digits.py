"""Bundled workload: scikit-learn's 8x8 handwritten digits and a small CNN trained once per machine."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from search.transforms.training import train_classifier
from search.workloads._base import Split, Workload

# bump when DigitsCNN or its training changes, so old cached weights are not loaded into it
# (v2: the initial weights are seeded; v1 teachers started from whatever the global RNG held)
ARCH_VERSION = "digits-cnn-v2"


class DigitsCNN(nn.Module):
    """Three conv blocks and a two-layer classifier for 1x8x8 inputs (about 90k parameters)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 2 * 2, 128), nn.ReLU(), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def split_digits(seed: int, test_fraction: float = 0.2, val_fraction: float = 0.1) -> tuple[Split, Split, Split]:
    """A fixed, stratified train/val/test split of the 1,797 digits, decided by ``seed``."""
    # imported here, not with the module: every worker unpickles DigitsCNN from this module, and only the driver
    # makes the splits (sklearn and the scipy it loads were a second of each worker's start)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    val_share = val_fraction / (1 - test_fraction)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_share, random_state=seed, stratify=y_rest
    )
    return Split(x_train, y_train), Split(x_val, y_val), Split(x_test, y_test)


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "optsearch"


def load(seed: int = 0, epochs: int = 30, cache_dir: str | None = None, distill_epochs: int = 20) -> Workload:
    """The digits workload; the teacher is trained on first use (seconds) and cached on this machine."""
    train, val, test = split_digits(seed)
    key = hashlib.sha256(f"{ARCH_VERSION}:{seed}:{epochs}".encode()).hexdigest()[:16]
    path = Path(cache_dir) if cache_dir else default_cache_dir()
    weights = path / f"digits-teacher-{key}.pt"
    torch.manual_seed(seed)  # the same seed, the same teacher, on any machine
    model = DigitsCNN()
    if weights.exists():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    else:
        train_classifier(model, train, val, epochs=epochs, lr=2e-3, seed=seed)
        save_weights(model, weights)
    return Workload(
        name="digits",
        model=model.eval(),
        train=train,
        val=val,
        test=test,
        preprocessing="8x8 grayscale digit as float32 in [0, 1] (sklearn pixel value / 16), shape (N, 1, 8, 8)",
        classifier="classifier.3",
        distill_epochs=distill_epochs,
        key=key,
    )


def save_weights(model: nn.Module, target: Path) -> None:
    """A model's weights (its state dict) to ``target``, atomically: a cache a killed run leaves is whole or absent.
    Read them back with ``torch.load(target, weights_only=True)``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as tmp:
        torch.save(model.state_dict(), tmp)
    os.replace(tmp.name, target)
