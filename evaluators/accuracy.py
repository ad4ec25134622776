"""Task accuracy on the held-out test split, run through the candidate's own session."""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluators._base import Built, Evaluator


def predict(built: Built) -> np.ndarray:
    session = built.session
    name = session.get_inputs()[0].name
    size = built.candidate.batch_size
    x = built.test.x.astype(np.float32)
    logits = [session.run(None, {name: x[i:i + size]})[0] for i in range(0, len(x), size)]
    return np.concatenate(logits)


class Accuracy(Evaluator):
    """Top-1 accuracy on the test split (never seen by training or calibration)."""

    name = "accuracy"
    metric = "accuracy"
    direction = "maximize"

    def measure(self, built: Built) -> dict[str, Any]:
        predictions = predict(built).argmax(axis=1)
        return {"accuracy": float((predictions == built.test.y).mean())}
