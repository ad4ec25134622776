"""Task accuracy on the held-out test split, run through the candidate's own runner."""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluators._base import Built, Evaluator
from search.schema import Column


def predict(built: Built) -> np.ndarray:
    """Outputs for the whole test split, in batches of ``batch_size`` through the candidate's runner
    (replicas, pipeline stages and all: the score is of the model as it is deployed)."""
    size = built.candidate.batch_size
    x = built.test.x.astype(np.float32)
    return np.concatenate([built.runner.run(x[i:i + size]) for i in range(0, len(x), size)])


class Accuracy(Evaluator):
    """Top-1 accuracy on the test split (never seen by training or calibration)."""

    name = "accuracy"
    metric = "accuracy"
    direction = "maximize"
    columns = (Column("accuracy", unit="", label="accuracy (test split)", doc="top-1 on the held-out test split"),)

    def measure(self, built: Built) -> dict[str, Any]:
        predictions = predict(built).argmax(axis=1)
        return {"accuracy": float((predictions == built.test.y).mean())}

    def card_note(self, row: dict[str, Any], target: dict[str, Any]) -> str:
        return "top-1 on the workload's held-out test split, through this ONNX model"
