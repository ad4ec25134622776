"""What each parallelism mode does to one model, timed in one process against sequential.

    python bench/modes.py [--degree 2] [--rounds 7] [--model baseline|small] [--bits 32|8]

Builds the digits CNN (fp32 baseline, or pruned 50 % + distilled with --model small) at
--bits, then in each of --rounds rounds measures every mode at --degree with the search's own
Latency and Energy evaluators (modes in a new order each round, so drift hits all alike).
Prints per mode the median over rounds of the p50 latency, the throughput, the energy per
input, and the ratios against sequential; and checks that every mode returned the same
outputs as sequential on the test split.
"""

from __future__ import annotations

import argparse
import random
import statistics

import numpy as np
import torch

from evaluators import Built, Energy, Latency
from search.core.candidate import Candidate
from search.runtime.session_settings import PARALLELISM
from search.runtime.target import Target
from search.trial.build import build_candidate
from search.workloads import digits

MODELS = {"baseline": {}, "small": {"prune_rate": 0.5, "prune_round_to": 8, "distill_temperature": 4.0,
                                    "distill_alpha": 0.9}}


def built_for(model_bytes: bytes, base: Candidate, mode: str, degree: int, test) -> Built:
    cand = base.replace(parallelism=mode, degree=1 if mode == "sequential" else degree,
                        micro_batches=4 if mode == "pipeline" else None)
    return Built(model_bytes, cand, Target(name="cpu"), test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--degree", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--model", choices=sorted(MODELS), default="baseline")
    parser.add_argument("--bits", type=int, choices=[32, 16, 8], default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    workload = digits.load()
    base = Candidate(target="cpu", quant_bits=args.bits, quant_mode="minmax" if args.bits == 8 else None,
                     **MODELS[args.model])
    model_bytes = build_candidate(workload, base, Target(name="cpu"), seed=0, timings={})
    builts = {mode: built_for(model_bytes, base, mode, args.degree, workload.test) for mode in PARALLELISM}
    reference = builts["sequential"].runner.run(workload.test.inputs)[0]
    same = {m: bool(np.allclose(b.runner.run(workload.test.inputs)[0], reference, rtol=1e-5, atol=1e-5))
            for m, b in builts.items()}
    latency, energy = Latency(), Energy(window_s=0.5)
    found: dict[str, list[dict]] = {mode: [] for mode in PARALLELISM}
    order = list(PARALLELISM)
    for round_ in range(args.rounds):
        random.Random(round_).shuffle(order)
        for mode in order:
            found[mode].append({**latency.measure(builts[mode]), **energy.measure(builts[mode])})
    for b in builts.values():
        b.close()
    seq = {k: statistics.median(m[k] for m in found["sequential"]) for k in ("latency_ms", "energy_mj")}
    print(f"digits CNN ({args.model}, {args.bits} bits, {len(model_bytes)} bytes), batch {base.batch_size}, "
          f"degree {args.degree}, {args.rounds} rounds; medians; energy is {found['sequential'][0]['energy_source']}")
    print(f"{'mode':<14} {'p50 ms':>8} {'x seq':>6} {'inputs/s':>9} {'mJ/input':>9} {'x seq':>6}  same outputs")
    for mode in PARALLELISM:
        lat = statistics.median(m["latency_ms"] for m in found[mode])
        thr = statistics.median(m["throughput_ips"] for m in found[mode])
        mj = statistics.median(m["energy_mj"] for m in found[mode])
        print(f"{mode:<14} {lat:8.4f} {seq['latency_ms'] / lat:6.2f} {thr:9.0f} {mj:9.4f} {mj / seq['energy_mj']:6.2f}"
              f"  {same[mode]}")


if __name__ == "__main__":
    main()
