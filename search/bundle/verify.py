"""Check this bundle on this machine, with onnxruntime and numpy alone.

    python verify.py [--intra-op-threads N] [--max-slowdown R]

1. The model files are the ones picked (sha256).
2. The card's provider runs here, and the sessions really run on it (no silent CPU fallback).
3. The bundled sample gives the recorded outputs, within a tolerance that fits the precision.
4. The model is timed under its runtime settings with the search's protocol (p50 with its
   ~95 % interval, p95), and the figures are printed beside the card's, with the ratio.
5. This machine is compared with the one in the card (CPU, cores, memory, GPU, governor,
   software versions).

Exit 0: the bundle reproduces its outputs here. Exit 1: a file was altered, the outputs differ,
the provider is missing or fell back, or (with --max-slowdown) the p50 is more than R times the card's.
Exit 2: the bundle cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import portable  # noqa: E402
from machine import COMPARED_FACTS, describe_machine  # noqa: E402
from run import BundleError, load, read_spec, sample, sha256  # noqa: E402


def altered_files(folder: Path, spec: dict[str, Any]) -> list[str]:
    """The model files that are missing or whose sha256 is not the picked one's."""
    found = []
    for entry in [spec["model"], *spec.get("stages", [])]:
        path = folder / entry["file"]
        if not path.exists():
            found.append(f"{entry['file']} (missing)")
            continue
        digest = sha256(path)
        if digest != entry["sha256"]:
            found.append(f"{entry['file']} (sha256 {digest[:12]}..., picked {entry['sha256'][:12]}...)")
    return found


def compare_outputs(got: dict[str, np.ndarray], recorded: dict[str, np.ndarray],
                    tolerance: dict[str, Any]) -> list[str]:
    """One line per output: how far it is from the recorded one, and whether within tolerance."""
    lines = []
    for name, expected in recorded.items():
        actual = got[name]
        if actual.shape != expected.shape:
            lines.append(f"FAIL output {name}: shape {list(actual.shape)}, recorded {list(expected.shape)}")
            continue
        if not np.issubdtype(expected.dtype, np.floating):
            differ = int(np.count_nonzero(actual != expected))
            verdict = "ok" if differ == 0 else "FAIL"
            lines.append(f"{verdict} output {name}: {differ} of {expected.size} values differ (exact match needed)")
            continue
        rtol, atol = tolerance["rtol"], tolerance["atol"][name]
        gap = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        outside = int(np.count_nonzero(gap > atol + rtol * np.abs(expected)))
        verdict = "ok" if outside == 0 and np.all(np.isfinite(actual) == np.isfinite(expected)) else "FAIL"
        lines.append(f"{verdict} output {name}: max |difference| {gap.max():.3g} (allowed {atol:.3g} + {rtol:g} x "
                     f"|value| for {tolerance['precision']}); {outside} of {expected.size} values outside")
    return lines


def machine_differences(card_manifest: dict[str, Any]) -> list[str]:
    here, there = describe_machine(), card_manifest.get("machine") or {}
    found = [f"{key}: here {here.get(key)}, card {there.get(key)}" for key in COMPARED_FACTS
             if key in there and here.get(key) != there.get(key)]
    measured_with = there.get("onnxruntime") or (card_manifest.get("software") or {}).get("onnxruntime")
    if measured_with and measured_with != ort.__version__:
        found.append(f"onnxruntime: here {ort.__version__}, card {measured_with}")
    numpy_then = (card_manifest.get("software") or {}).get("numpy")
    if numpy_then and numpy_then != np.__version__:
        found.append(f"numpy: here {np.__version__}, card {numpy_then}")
    return found


def time_model(model: Any, spec: dict[str, Any], inputs: dict[str, np.ndarray], budget_s: float | None) -> np.ndarray:
    """Seconds per call on the measured batch (the sample, repeated to ``batch_size``), by the search's protocol."""
    batch = portable.batch_of(inputs, spec["batch_size"])
    protocol = dict(spec["latency_protocol"])
    if budget_s is not None:
        protocol["budget_s"] = budget_s
        protocol["min_time_s"] = min(protocol["min_time_s"], budget_s)
    return portable.time_calls(model.runner, model.feeds(batch, {}), **protocol)


def latency_lines(times: np.ndarray, spec: dict[str, Any]) -> tuple[list[str], float]:
    """The measured figures beside the card's; returns the lines and measured p50 / card p50."""
    p50, (low, high) = float(np.median(times)) * 1e3, portable.median_ci(times)
    p95 = float(np.percentile(times, 95)) * 1e3
    card = spec.get("card_figures") or {}
    throughput = spec["batch_size"] / (p50 / 1e3)
    lines = [f"latency p50 {p50:.4g} ms [{low * 1e3:.4g}, {high * 1e3:.4g}], p95 {p95:.4g} ms, "
             f"throughput {throughput:.4g} inputs/s over {len(times)} calls of batch {spec['batch_size']}"]
    card_p50 = card.get("latency_ms")
    if not card_p50:
        return lines + ["the card has no latency to compare with"], float("nan")
    ratio = p50 / card_p50
    nan = float("nan")
    lines.append(f"card:       p50 {card_p50:.4g} ms [{card.get('latency_ci_low_ms', nan):.4g}, "
                 f"{card.get('latency_ci_high_ms', nan):.4g}], p95 {card.get('latency_p95_ms', nan):.4g} ms, "
                 f"throughput {card.get('throughput_ips', nan):.4g} inputs/s")
    covers = "half_width" in ((spec.get("intervals") or {}).get("latency_ms") or {})
    if covers:  # a re-timed card: its interval is where a new session's p50 should fall (results/intervals.py)
        inside = card.get("latency_ci_low_ms", card_p50) <= p50 <= card.get("latency_ci_high_ms", card_p50)
        said = "the card's interval covers a new session"
    else:  # timed once: that session's interval, widened by the noise floor
        noise = spec.get("noise_floor", 0.02)
        card_low = card.get("latency_ci_low_ms", card_p50) * (1 - noise)
        card_high = card.get("latency_ci_high_ms", card_p50) * (1 + noise)
        inside = low * 1e3 <= card_high and high * 1e3 >= card_low
        said = f"the card's interval is one session's; noise floor +-{noise:.0%}"
    verdict = ("within the card's interval" if inside
               else f"{ratio:.2f}x the card's p50: {'slower' if ratio > 1 else 'faster'} than measured in the search")
    lines.append(f"measured / card p50: {ratio:.3f} ({verdict}; {said})")
    return lines, ratio


def verify(folder: Path, intra_op_threads: int | None, max_slowdown: float | None, budget_s: float | None) -> int:
    spec = read_spec(folder)
    failed = False
    print(f"bundle {folder}: trial {spec['trial']} of run {spec.get('run')}, {spec['runtime']['parallelism']} "
          f"x{spec['runtime']['degree']}, batch {spec['batch_size']}, on {spec['provider']}")
    altered = altered_files(folder, spec)
    for line in altered:
        print(f"FAIL file altered: {line}")
    failed |= bool(altered)
    if spec["provider"] not in ort.get_available_providers():
        print(f"FAIL provider {spec['provider']} is not available here ({', '.join(ort.get_available_providers())})"
              ": ONNX Runtime would run the model on another provider, so the card's figures cannot hold")
        return 1
    if intra_op_threads is not None:
        print(f"note: runtime differs from the card: intra_op_num_threads {intra_op_threads} "
              f"(card {spec['runtime']['intra_op_num_threads']})")
    differ = machine_differences(spec.get("manifest") or {})
    print("machine: the same as the card's" if not differ else
          "machine: this machine differs from the card's: " + "; ".join(differ))
    with load(folder, intra_op_threads) as model:
        if spec["provider"] not in model.active_providers:
            print(f"FAIL provider {spec['provider']} did not start here (sessions run on "
                  f"{', '.join(model.active_providers)}): refusing a silent fallback")
            return 1
        inputs, recorded = sample(folder, spec)
        lines = compare_outputs(model(inputs), recorded, spec["tolerance"])
        for line in lines:
            print(line)
        failed |= any(line.startswith("FAIL") for line in lines)
        latency, ratio = latency_lines(time_model(model, spec, inputs, budget_s), spec)
    for line in latency:
        print(line)
    if max_slowdown is not None and ratio > max_slowdown:
        print(f"FAIL p50 is {ratio:.2f}x the card's, over --max-slowdown {max_slowdown}")
        failed = True
    print("verify: FAILED" if failed else "verify: ok")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intra-op-threads", type=int, help="run with another intra-op thread count than the card's")
    parser.add_argument("--max-slowdown", type=float, help="fail when the p50 is more than this times the card's")
    parser.add_argument("--budget-s", type=float, help="cap on the timing (default: the search's)")
    args = parser.parse_args(argv)
    try:
        return verify(HERE, args.intra_op_threads, args.max_slowdown, args.budget_s)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
