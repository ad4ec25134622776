"""Write a picked model's bundle: everything to run it as measured, and to check it again, with onnxruntime and numpy.

    BUNDLE/
      trial-N.onnx, trial-N.json   the model and its card (with the reproducibility manifest)
      stages/stage-K.onnx          a pipeline's stage models, cut as the search cut them
      sample.npz                   the batch the search timed it on, and the outputs this model gave on it
      bundle.json                  runtime settings, provider and options, files' sha256, tolerance, protocol
      run.py, verify.py            load(BUNDLE) / python run.py; python verify.py on the deployment machine
      portable.py, machine.py      the project's own runners and machine description, copied unchanged
      README.txt
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from search.core.files import write_bytes, write_text
from search.runtime import machine, portable
from search.runtime.graph_split import split_model
from search.runtime.runners import make_runner
from search.runtime.target import Target

FORMAT = 1
SHIPPED = (Path(__file__).with_name("run.py"), Path(__file__).with_name("verify.py"), Path(portable.__file__),
           Path(machine.__file__))
PROTOCOL_KEYS = ("warmup", "min_repeats", "max_repeats", "budget_s", "ci_rel", "min_time_s")
# rtol and atol (a share of the output's largest magnitude) by the precision the model computes in: other
# CPUs take other kernels (AVX2, AVX-512, VNNI), which round fp32 sums apart and may move an int8 value a step
TOLERANCE = {32: ("fp32", 1e-3), 16: ("16-bit float", 3e-2), 8: ("int8", 0.1), 4: ("int4", 0.1)}
CARD_FIGURES = ("latency_ms", "latency_ci_low_ms", "latency_ci_high_ms", "latency_p95_ms", "throughput_ips")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def graph_io(model_bytes: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """The graph's inputs (name, numpy dtype, shape with symbolic axes) and its output names, in order."""
    graph = onnx.load_from_string(model_bytes).graph
    constants = {init.name for init in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in constants:
            continue
        tensor = value.type.tensor_type
        shape = [d.dim_param or d.dim_value or None for d in tensor.shape.dim]
        inputs.append({"name": value.name, "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name,
                       "shape": shape})
    return inputs, [o.name for o in graph.output]


def latency_protocol(config: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The timing protocol the run's latency evaluator used (its config over its defaults), and its noise floor."""
    from evaluators import Latency

    defaults = {k: p.default for k, p in inspect.signature(Latency.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    configured = next((dict(v) for v in (config.get("evaluators") or {}).values()
                       if isinstance(v, dict) and str(v.get("_target_", "")).endswith("Latency")), {})
    merged = {**defaults, **configured}
    protocol = {k: merged[k] for k in PROTOCOL_KEYS}
    protocol["min_time_s"] = min(protocol["min_time_s"], protocol["budget_s"])
    return protocol, float(merged["noise_floor"])


def tolerance(bits: Any, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    precision, share = TOLERANCE.get(int(bits) if bits is not None else 32, TOLERANCE[8])
    scale = {name: float(np.max(np.abs(v))) if v.size and np.issubdtype(v.dtype, np.floating) else 0.0
             for name, v in outputs.items()}
    return {"precision": precision, "rtol": share, "atol": {name: share * s + 1e-6 for name, s in scale.items()}}


def provider_spec(target_config: dict[str, Any], bits: Any) -> dict[str, Any]:
    """The provider, its options for this model's precision, and which options name a folder (kept in the bundle)."""
    target = Target.from_config(target_config)
    options = {**target.provider_options, **target.provider_options_by_bits.get(bits, {})}
    folders = dict(target.run_dir_options)
    return {"provider": target.provider, "provider_options": {k: v for k, v in options.items() if k not in folders},
            "bundle_dir_options": folders}


def reference_outputs(model_bytes: bytes, output_names: list[str], settings: dict[str, Any], provider: dict[str, Any],
                      stages: list[bytes], batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """What the model gives on ``batch`` under its settings: on its provider where it runs here, else on the CPU."""
    import onnxruntime as ort

    name = provider["provider"] if provider["provider"] in ort.get_available_providers() else "CPUExecutionProvider"
    providers = [(name, provider["provider_options"])] if name == provider["provider"] and provider[
        "provider_options"] else [name]
    runner = make_runner(model_bytes, settings, providers, stages or None)
    try:
        outputs = runner.run(batch)
    finally:
        runner.close()
    return dict(zip(output_names, outputs, strict=True)), name


def _plain(value: Any) -> Any:
    """A count read back from a table (2.0: pandas keeps a column with gaps as floats) as the int it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def clear_for_bundle(out: Path) -> None:
    """Make ``out`` ready for a bundle: an earlier bundle's files go (those its bundle.json names, so that
    no stale model lies beside the new one); a folder that holds other things is refused (ValueError)."""
    if not out.exists() or not any(out.iterdir()):
        return
    spec_path = out / "bundle.json"
    try:
        spec = json.loads(spec_path.read_text())
        files = [spec["model"]["file"], spec["card"], spec["sample"]["file"], "bundle.json", "README.txt",
                 *(source.name for source in SHIPPED), *(stage["file"] for stage in spec.get("stages", []))]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{out} is not empty and holds no bundle: give an empty or new folder") from None
    for name in files:
        path = out / name
        if path.resolve().parent in (out.resolve(), (out / "stages").resolve()):  # never outside the bundle
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (out / "stages").rmdir()  # only when empty
    shutil.rmtree(out / "__pycache__", ignore_errors=True)  # what running run.py from the folder left


def write_bundle(out: Path, model_bytes: bytes, card: dict[str, Any], run_config: dict[str, Any],
                 rows: dict[str, np.ndarray], run_name: str) -> None:
    """The bundle of the model ``model_bytes`` with ``card``, its sample drawn from ``rows`` (the run's sample).
    An earlier bundle in ``out`` is replaced; a folder that holds anything else is refused (ValueError)."""
    clear_for_bundle(out)
    out.mkdir(parents=True, exist_ok=True)
    runtime = card["runtime"]
    settings = {k: _plain(v) for k, v in runtime.items() if k not in ("target", "provider", "batch_size")}
    batch_size = int(runtime.get("batch_size") or 32)
    target_config = (run_config.get("target_configs") or {}).get(runtime["target"], run_config["target"])
    provider = provider_spec(target_config, card["parameters"].get("quant_bits"))
    stages = split_model(model_bytes, settings["stages"]) if settings["parallelism"] == "pipeline" else []
    inputs, output_names = graph_io(model_bytes)
    missing = [i["name"] for i in inputs if i["name"] not in rows]
    if missing:
        raise ValueError(f"the run's sample lacks the model's input(s) {missing}")
    batch = portable.batch_of({i["name"]: rows[i["name"]] for i in inputs}, batch_size)
    outputs, outputs_from = reference_outputs(model_bytes, output_names, settings, provider, stages, batch)
    protocol, noise_floor = latency_protocol(run_config)

    model_file = card["model_file"]
    write_bytes(out / model_file, model_bytes)
    write_text(out / Path(model_file).with_suffix(".json"), json.dumps(card, indent=2, default=str))
    stage_files = []
    for k, stage in enumerate(stages):
        (out / "stages").mkdir(exist_ok=True)
        write_bytes(out / "stages" / f"stage-{k}.onnx", stage)
        stage_files.append({"file": f"stages/stage-{k}.onnx", "sha256": sha256(stage)})
    buffer = io.BytesIO()
    np.savez(buffer, **{f"input/{k}": v for k, v in batch.items()}, **{f"output/{k}": v for k, v in outputs.items()})
    write_bytes(out / "sample.npz", buffer.getvalue())
    for source in SHIPPED:
        shutil.copyfile(source, out / source.name)
    spec = {
        "format": FORMAT, "run": run_name, "trial": card["trial"],
        "model": {"file": model_file, "sha256": sha256(model_bytes)}, "stages": stage_files,
        "card": Path(model_file).with_suffix(".json").name,
        "inputs": inputs, "outputs": output_names, "runtime": settings, "batch_size": batch_size, **provider,
        "sample": {"file": "sample.npz", "rows": batch_size, "outputs_from": outputs_from},
        "tolerance": tolerance(card["parameters"].get("quant_bits"), outputs),
        "latency_protocol": protocol, "noise_floor": noise_floor, "intervals": card.get("intervals") or {},
        "card_figures": {k: card["metrics"].get(k) for k in CARD_FIGURES if card["metrics"].get(k) is not None},
        "manifest": card.get("manifest") or {},
    }
    write_text(out / "bundle.json", json.dumps(spec, indent=2, default=str))
    write_text(out / "README.txt", readme(spec))


def readme(spec: dict[str, Any]) -> str:
    names = ", ".join(f"{i['name']}={i['dtype']}{i['shape']}" for i in spec["inputs"])
    runtime = spec["runtime"]
    return f"""Trial {spec['trial']} of run {spec['run']}: {spec['model']['file']}, its card {spec['card']}.
Runs as measured: {runtime['parallelism']} x{runtime['degree']}, batch {spec['batch_size']}, on {spec['provider']}.
Inputs: {names}. Outputs: {', '.join(spec['outputs'])}.

Needs only Python 3.10+, numpy and onnxruntime ({spec['provider']}):
    pip install numpy onnxruntime

    python run.py        # runs the bundled sample; python run.py INPUTS.npz --out OUTPUTS.npz for yours
    python verify.py     # checks files, outputs and latency against the card on this machine; exit 1 if they differ

From Python:
    import sys; sys.path.insert(0, "<this folder>")
    from run import load
    model = load("<this folder>")
    outputs = model({{name: array, ...}})    # every output by name
"""
