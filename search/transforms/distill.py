"""Recovery after pruning: knowledge distillation from the original model (the teacher)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from search.transforms.training import train_model
from search.workloads import Workload


def distill(student: nn.Module, workload: Workload, temperature: float, alpha: float, seed: int, device: str = "cpu",
            after_epoch: Callable[[nn.Module, int, int, float], None] | None = None) -> float:
    """Fine-tune ``student`` in place against the teacher; T = 0 trains on labels only.

    The loss fits the workload's metric (search/transforms/training.py): a task without labels
    (cosine fidelity) always learns from the teacher's outputs.

    Returns:
        the student's validation score (the workload's metric) after recovery.
    """
    if temperature < 0 or not 0 <= alpha <= 1:
        raise ValueError(f"distillation needs T >= 0 and 0 <= alpha <= 1, got T={temperature}, alpha={alpha}")
    label_free = workload.train.y is None or workload.metric.loss == "cosine"
    return train_model(
        student,
        workload.train,
        workload.val,
        epochs=workload.distill_epochs,
        lr=workload.distill_lr,
        seed=seed,
        metric=workload.metric,
        teacher=workload.model if temperature > 0 or label_free else None,
        temperature=temperature,
        alpha=alpha,
        device=device,
        batch_size=workload.batch_size,
        output_names=workload.output_names or None,
        after_epoch=after_epoch,
    )
