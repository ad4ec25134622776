"""Workload factories for integration tests, used as ``workload=...`` overrides like a user's own."""

from __future__ import annotations

import torch

from search.workloads import Workload, digits


class ConvOnlyNet(torch.nn.Module):
    """No Linear and no MatMul, so int4 weight-only has nothing to apply to."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 10, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def conv_only(seed: int = 0, epochs: int = 10) -> Workload:
    """The digits data with a small conv-only classifier trained for a few epochs."""
    from search.transforms.training import train_classifier

    train, val, test = digits.split_digits(seed)
    model = ConvOnlyNet()
    train_classifier(model, train, val, epochs=epochs, lr=5e-3, seed=seed)
    return Workload(name="conv-only", model=model.eval(), train=train, val=val, test=test,
                    classifier="body.2", distill_epochs=1, key=f"conv-only-{seed}-{epochs}")


def not_a_workload(seed: int = 0) -> dict:
    return {"model": None}


def wrong_shape(seed: int = 0) -> Workload:
    """The digits teacher handed 16x16 inputs: the data does not fit the model."""
    import numpy as np

    from search.workloads import Split

    base = digits.load(seed=seed)
    big = Split(np.zeros((8, 1, 16, 16), dtype=np.float32), np.zeros(8, dtype=np.int64))
    return Workload(name="wrong-shape", model=base.model, train=big, val=big, test=big)


class SvdHead(torch.nn.Module):
    """A classifier whose forward uses an SVD, which ONNX export does not support."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        singular = torch.linalg.svdvals(x.flatten(2).reshape(-1, 8, 8))
        return self.head(singular)


def unexportable(seed: int = 0) -> Workload:
    train, val, test = digits.split_digits(seed)
    return Workload(name="svd", model=SvdHead().eval(), train=train, val=val, test=test)
