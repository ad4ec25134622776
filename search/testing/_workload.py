"""The promises every workload keeps: it passes the start checks, and its ONNX export is the model it exports."""

from __future__ import annotations

import math

import numpy as np
import pytest

from search.transforms import export_onnx
from search.workloads import Workload, check_exportable, check_workload, describe
from search.workloads.calling import to_tensors


class WorkloadContract:
    """Inherit it and give the ``workload`` fixture (what your factory returns, a ``search.workloads.Workload``);
    every test below runs on it.

    The exported model must match the torch model on ``rows`` test rows within ``rtol`` and ``atol``.
    """

    rows = 4
    rtol = 1e-3
    atol = 1e-4

    @pytest.fixture
    def workload(self) -> Workload:
        raise NotImplementedError

    def checked(self, workload: Workload) -> Workload:
        """The workload after the checks a run makes at start (they fill its output names)."""
        return check_workload(workload, f"{type(self).__name__}.workload")

    def test_passes_the_checks_a_run_makes_at_start(self, workload: Workload):
        checked = self.checked(workload)  # a ConfigError here is the one line a run would stop on
        check_exportable(checked)
        assert checked is workload and checked.output_names

    def test_splits_have_the_same_input_names_and_dtypes(self, workload: Workload):
        expected = {name: array.dtype for name, array in workload.test.inputs.items()}
        for name in ("train", "val"):
            split = getattr(workload, name)
            assert len(split) > 0, f"the {name} split is empty"
            assert {k: v.dtype for k, v in split.inputs.items()} == expected, f"{name} differs from test"

    def test_the_metric_scores_the_original_models_test_outputs_finitely(self, workload: Workload):
        checked = self.checked(workload)
        outputs = checked.outputs(None, checked.test.inputs)
        value = checked.metric.score(outputs, checked.test.y, outputs if checked.metric.needs_reference else None)
        assert math.isfinite(value), f"{checked.metric.name} scores the original model {value}"

    def test_the_exported_model_computes_what_the_model_does(self, workload: Workload):
        checked = self.checked(workload)
        if checked.is_onnx:
            pytest.skip("a bare ONNX workload is its own export")
        model_bytes = export_onnx(checked.model, to_tensors(checked.train.rows(0, 1)), checked.output_names,
                                  checked.axes)
        rows = checked.test.rows(0, self.rows)
        exported, original = checked.outputs(model_bytes, rows), checked.outputs(None, rows)
        assert list(exported) == list(original), "the export names its outputs as the model does"
        for name, value in original.items():
            np.testing.assert_allclose(exported[name], value, rtol=self.rtol, atol=self.atol, err_msg=name)

    def test_describe_names_its_inputs_and_outputs(self, workload: Workload):
        checked = self.checked(workload)
        described = describe(checked)
        assert [spec["name"] for spec in described["inputs"]] == checked.input_names
        assert [spec["name"] for spec in described["outputs"]] == checked.output_names
        assert described["input_name"] == checked.input_names[0]
        assert described["output_name"] == checked.output_names[0]
        for spec in [*described["inputs"], *described["outputs"]]:
            assert spec["shape"][0] == "batch" and spec["dtype"], spec
        assert described["metric"]["name"] == checked.metric.name
