"""Recovery after pruning: knowledge distillation from the original model (the teacher)."""

from __future__ import annotations

from torch import nn

from search.transforms.training import train_classifier
from search.workloads._base import Workload


def distill(student: nn.Module, workload: Workload, temperature: float, alpha: float, seed: int, device: str = "cpu") -> float:
    """Fine-tune ``student`` in place against the teacher; T = 0 trains on labels only.

    Returns:
        the student's validation accuracy after recovery.
    """
    if temperature < 0 or not 0 <= alpha <= 1:
        raise ValueError(f"distillation needs T >= 0 and 0 <= alpha <= 1, got T={temperature}, alpha={alpha}")
    return train_classifier(
        student,
        workload.train,
        workload.val,
        epochs=workload.distill_epochs,
        lr=workload.distill_lr,
        seed=seed,
        teacher=workload.model if temperature > 0 else None,
        temperature=temperature,
        alpha=alpha,
        device=device,
    )
