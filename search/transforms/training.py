"""Supervised and distillation training loops shared by the teacher and the recovery step."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from search.workloads._base import Split


def _batches(split: Split, batch_size: int, generator: torch.Generator):
    order = torch.randperm(len(split), generator=generator)
    x = torch.from_numpy(split.x)
    y = torch.from_numpy(split.y)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def accuracy(model: nn.Module, split: Split, device: str = "cpu") -> float:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(split.x).to(device))
    return float((logits.argmax(1).cpu().numpy() == split.y).mean())


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    """Hinton's loss: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE; T = 0 is plain CE."""
    hard = F.cross_entropy(student_logits, labels)
    if temperature <= 0 or teacher_logits is None:
        return hard
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
    ) * temperature**2
    return alpha * soft + (1 - alpha) * hard


def train_classifier(
    model: nn.Module,
    train: Split,
    val: Split,
    *,
    epochs: int,
    lr: float,
    seed: int,
    teacher: nn.Module | None = None,
    temperature: float = 0.0,
    alpha: float = 0.0,
    device: str = "cpu",
    batch_size: int = 64,
) -> float:
    """Train in place (with the teacher's soft targets when given); keep the best epoch on ``val``.

    Returns:
        the validation accuracy of the weights left in ``model``.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # Epoch 0 is the untrained state: with epochs=0 nothing changes, and training never
    # leaves the model worse on val than it came in.
    best_acc, best_state = accuracy(model, val, device), copy.deepcopy(model.state_dict())
    for _ in range(epochs):
        model.train()
        for xb, yb in _batches(train, batch_size, generator):
            xb, yb = xb.to(device), yb.to(device)
            with torch.no_grad():
                t_logits = teacher(xb) if teacher is not None and temperature > 0 else None
            loss = distillation_loss(model(xb), t_logits, yb, temperature, alpha)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        acc = accuracy(model, val, device)
        if acc > best_acc:
            best_acc, best_state = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    return best_acc


__all__ = ["accuracy", "distillation_loss", "train_classifier"]
