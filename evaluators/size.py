"""Size of the exported ONNX model in bytes: what a user ships."""

from __future__ import annotations

from typing import Any

from evaluators._base import Built, Evaluator


class Size(Evaluator):
    name = "size"
    metric = "size_bytes"
    direction = "minimize"

    def measure(self, built: Built) -> dict[str, Any]:
        return {"size_bytes": len(built.model_bytes)}
