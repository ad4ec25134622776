"""Training loops shared by the teacher and the recovery step, for any task a metric describes.

The loss follows the workload's metric (``Metric.loss``): cross-entropy on class logits, mean
squared error on values, or cosine distance to the original model's outputs when there are
no labels. Distillation adds the teacher's outputs: KL at temperature T on logits (Hinton),
MSE or cosine to them on values. The best epoch is chosen by the metric itself on ``val``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from search.core.metrics import Accuracy, Metric
from search.workloads.calling import call, run_torch, to_tensors
from search.workloads import Split


def _batches(split: Split, batch_size: int, generator: torch.Generator) -> Iterator[tuple[dict, object]]:
    order = torch.randperm(len(split), generator=generator).numpy()
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield {k: v[index] for k, v in split.inputs.items()}, split.labels(index)


def _labels_tensor(labels: object, loss: str, device: str) -> torch.Tensor | None:
    if labels is None:
        return None
    if isinstance(labels, Mapping):
        labels = next(iter(labels.values()))
    tensor = torch.from_numpy(np.ascontiguousarray(labels)).to(device)
    return tensor.long() if loss == "cross_entropy" else tensor.float()


def task_loss(loss: str, student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor | None,
              temperature: float, alpha: float) -> torch.Tensor:
    """The recovery loss: ``alpha`` x the teacher term + (1 - ``alpha``) x the label term.

    With T = 0 (or no teacher) only labels count; with no labels only the teacher does.
    """
    if loss == "cosine" or labels is None:
        if teacher is None:
            raise ValueError("a task without labels is trained against the original model's outputs; none given")
        return (1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)).mean()
    if loss == "cross_entropy":
        hard = F.cross_entropy(student, labels)
        if teacher is None or temperature <= 0:
            return hard
        soft = F.kl_div(F.log_softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1),
                        reduction="batchmean") * temperature**2
        return alpha * soft + (1 - alpha) * hard
    hard = F.mse_loss(student.reshape(labels.shape), labels)
    if teacher is None or temperature <= 0:
        return hard
    return alpha * F.mse_loss(student, teacher) + (1 - alpha) * hard


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    """Hinton's loss on class logits (kept for callers of the classifier-only version)."""
    return task_loss("cross_entropy", student_logits, teacher_logits, labels, temperature, alpha)


def _names(model: nn.Module, split: Split, output_names: list[str] | None) -> list[str]:
    if output_names:
        return list(output_names)
    with torch.no_grad():
        return [f"output_{i}" for i in range(len(call(model.eval(), to_tensors(split.rows(0, 1)))))]


def score(model: nn.Module, split: Split, metric: Metric, reference: Mapping[str, np.ndarray] | None = None,
          output_names: list[str] | None = None) -> float:
    """The metric of ``model`` on ``split``, run in torch."""
    outputs = run_torch(model, split.inputs, _names(model, split, output_names))
    return float(metric.score(outputs, split.y, reference))


def accuracy(model: nn.Module, split: Split, device: str = "cpu") -> float:
    return score(model.to("cpu"), split, Accuracy())


def train_model(
    model: nn.Module,
    train: Split,
    val: Split,
    *,
    epochs: int,
    lr: float,
    seed: int,
    metric: Metric | None = None,
    teacher: nn.Module | None = None,
    temperature: float = 0.0,
    alpha: float = 0.0,
    device: str = "cpu",
    batch_size: int = 64,
    output_names: list[str] | None = None,
    after_epoch: Callable[[nn.Module, int, int, float], None] | None = None,
) -> float:
    """Train in place (against the teacher's outputs when given); keep the best epoch on ``val``.

    ``after_epoch(model, epoch, epochs, best)`` is called after epoch 0 (the untrained state) and each
    epoch with the best validation score so far; it may raise to stop the training (a recovery rung,
    search/run/rungs.py).

    Returns:
        the validation score (the metric's) of the weights left in ``model``.
    """
    with _one_thread():
        return _train(model, train, val, epochs=epochs, lr=lr, seed=seed, metric=metric or Accuracy(),
                      teacher=teacher, temperature=temperature, alpha=alpha, device=device, batch_size=batch_size,
                      output_names=output_names, after_epoch=after_epoch or (lambda *_: None))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Train on one thread: the bundled models are small, and beside Ray's workers on a busy machine
    two threads ran 30 steps 50x slower than one (they wait on each other's time slices)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(model: nn.Module, train: Split, val: Split, *, epochs: int, lr: float, seed: int, metric: Metric,
           teacher: nn.Module | None, temperature: float, alpha: float, device: str, batch_size: int,
           output_names: list[str] | None, after_epoch: Callable[[nn.Module, int, int, float], None]) -> float:
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    needs_teacher = teacher is not None and (temperature > 0 or metric.loss == "cosine" or train.y is None)
    names = _names(model, val, output_names)
    scored = names.index(metric.output) if metric.output in names else 0  # the output the loss trains
    reference = _val_reference(teacher, val, metric, names)
    sign = 1 if metric.direction == "maximize" else -1
    # Epoch 0 is the untrained state: with epochs=0 nothing changes, and training never
    # leaves the model worse on val than it came in.
    best, best_state = score(model.to("cpu"), val, metric, reference, names), copy.deepcopy(model.state_dict())
    after_epoch(model, 0, epochs, best)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(1, epochs + 1):
        model.to(device).train()
        if needs_teacher:
            teacher.to(device).eval()
        for inputs, labels in _batches(train, batch_size, generator):
            tensors = to_tensors(inputs, device)
            with torch.no_grad():
                target = call(teacher, tensors)[scored] if needs_teacher else None
            loss = task_loss(metric.loss, call(model, tensors)[scored], target,
                             _labels_tensor(labels, metric.loss, device), temperature, alpha)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        value = score(model.to("cpu"), val, metric, reference, names)
        if sign * value > sign * best:
            best, best_state = value, copy.deepcopy(model.state_dict())
        after_epoch(model, epoch, epochs, best)
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    return best


def _val_reference(teacher: nn.Module | None, val: Split, metric: Metric,
                   names: list[str]) -> dict[str, np.ndarray] | None:
    """The original model's outputs on ``val``, for a metric that compares with them."""
    if not metric.needs_reference:
        return None
    if teacher is None:
        raise ValueError(f"metric {metric.name} compares with the original model; pass it as teacher")
    return run_torch(teacher.to("cpu"), val.inputs, names)


def train_classifier(model: nn.Module, train: Split, val: Split, **kwargs) -> float:
    """Train a classifier on its labels (accuracy picks the epoch): today's README's teacher training."""
    return train_model(model, train, val, metric=Accuracy(), **kwargs)


__all__ = ["accuracy", "distillation_loss", "score", "task_loss", "train_classifier", "train_model"]
