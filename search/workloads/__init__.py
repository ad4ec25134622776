"""Workloads: a trained model plus its data (the contract in _base.py). Bundled: ``digits``, ``text``, ``onnx_file``."""

from search.workloads._base import (INPUT_NAME, Split, Workload, check_exportable, check_workload, describe,
                                    has_attention, run_onnx)

__all__ = ["INPUT_NAME", "Split", "Workload", "check_exportable", "check_workload", "describe", "has_attention",
           "run_onnx"]
