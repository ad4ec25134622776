"""Candidate transforms: prune -> distill -> export -> quantize, each a small module."""

from search.transforms.distill import distill
from search.transforms.export import check_onnx, export_onnx
from search.transforms.prune import prune
from search.transforms.quantize import quantize

__all__ = ["check_onnx", "distill", "export_onnx", "prune", "quantize"]
