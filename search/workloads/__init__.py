"""Workloads: a trained model plus its data. Bundled: ``digits``."""

from search.workloads._base import Split, Workload, check_exportable, check_workload

__all__ = ["Split", "Workload", "check_exportable", "check_workload"]
