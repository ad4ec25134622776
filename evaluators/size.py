"""Size of the exported ONNX model in bytes: what a user ships."""

from __future__ import annotations

from typing import Any

from evaluators._base import Built, Evaluator
from search.core.schema import Column


class Size(Evaluator):
    name = "size"
    metric = "size_bytes"
    direction = "minimize"
    columns = (Column("size_bytes", kind="int", unit="bytes", label="model size", plot_scale=1024,
                      doc="size of the ONNX file"),)

    def measure(self, built: Built) -> dict[str, Any]:
        return {"size_bytes": len(built.model_bytes)}

    def card_note(self, row: dict[str, Any], target: dict[str, Any]) -> str:
        return "bytes of the ONNX file"
