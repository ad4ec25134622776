"""The GPU target end to end: CUDA provider for measurement, torch on CUDA for distillation, NVML energy."""

from __future__ import annotations

import pandas as pd
import torch
import pytest

from tests.conftest import search

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_gpu_search_measures_on_cuda_with_nvml(tmp_path, teacher_cache):
    proc = search(tmp_path, teacher_cache, "+target=gpu", "trials=3", "workers=1", "run=g", "remeasure=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "g" / "trials.csv")
    done = table[table["state"] == "COMPLETE"]
    assert len(done) >= 2 and (done["target"] == "gpu").all()
    assert (done["energy_source"] == "nvml").all() and (done["energy_mj"] > 0).all()


def test_cuda_runs_every_precision_the_gpu_target_declares_like_the_cpu(digits_workload):
    from search.config import compose_config
    from search.runtime.runners import SessionRunner
    from search.runtime.session_settings import runtime_settings
    from search.runtime.target import Target, load_provider_libraries
    from search.transforms import export_onnx, quantize

    target = Target.from_config(dict(compose_config(["+target=gpu"]).target))
    target.check_available()
    load_provider_libraries(target.provider)
    fp32 = export_onnx(digits_workload.model, torch.from_numpy(digits_workload.train.x[:32]))
    x = {"input": digits_workload.test.x}
    for bits in target.precisions:
        for mode in (target.half_formats if bits == 16 else [None]):
            model = quantize(fp32, bits, digits_workload.train.x[:256], 32, mode)
            gpu = SessionRunner(model, runtime_settings(), target.providers(bits))
            assert gpu.session.get_providers()[0] == "CUDAExecutionProvider"
            cpu_out = (SessionRunner(model, runtime_settings(), ["CPUExecutionProvider"]).run(x)[0]
                       if mode != "bf16" else None)
            out = gpu.run(x)[0]
            if cpu_out is not None:
                assert (out.argmax(1) == cpu_out.argmax(1)).mean() > 0.99, (bits, mode)


def test_tensorrt_runs_or_is_refused_at_start_in_one_line(tmp_path, teacher_cache):
    proc = search(tmp_path, teacher_cache, "+target=tensorrt", "trials=2", "workers=1", "run=t")
    if proc.returncode == 2:  # no TensorRT libraries here: refused before any trial, never run on the CPU
        assert proc.stderr.strip().splitlines()[-1].startswith("error: target tensorrt")
        assert "Traceback" not in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "t" / "trials.csv")
    assert (table["state"] == "COMPLETE").any() and (tmp_path / "t" / "trt-engines").is_dir()
