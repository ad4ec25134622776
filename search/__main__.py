"""``python -m search [override ...]``: run (or resume) a search; bad input is one line and exit 2."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from search.errors import ConfigError

USAGE = """usage: python -m search [key=value ...] [+target=NAME]
  trials=N  run=NAME  seed=S  workers=W  sampler=nsga2|tpe|random  workload=NAME
  cluster.address=auto|HOST:PORT  batch_size=B  (see README for all)"""


def summary(run_dir) -> str:
    import pandas as pd

    front = pd.read_csv(run_dir / "pareto.csv")
    table = pd.read_csv(run_dir / "trials.csv")
    base = table[table["baseline"] & (table["state"] == "COMPLETE")]
    cols = ["trial", "quant_bits", "prune_rate", "distill_temperature", "parallelism", "threads",
            "accuracy", "latency_ms", "energy_mj", "size_bytes"]
    lines = [f"\nPareto front ({len(front)} of {int((table['state'] == 'COMPLETE').sum())} completed trials):",
             front[cols].sort_values("latency_ms").to_string(index=False)]
    if len(base):
        b = base.iloc[0]
        fastest = front.loc[front["latency_ms"].idxmin()]
        smallest = front.loc[front["size_bytes"].idxmin()]
        lines.append(
            f"vs fp32 baseline (trial {int(b['trial'])}): fastest {b['latency_ms'] / fastest['latency_ms']:.2f}x faster "
            f"(accuracy {fastest['accuracy']:.4f} vs {b['accuracy']:.4f}); smallest "
            f"{b['size_bytes'] / smallest['size_bytes']:.1f}x smaller (accuracy {smallest['accuracy']:.4f})")
    lines.append(f"results: {run_dir}/  (pareto.png, pareto.html, history.png, importance.png, trials.csv, models/)")
    lines.append(f"pick one: python -m search.pick {run_dir} --min-accuracy 0.97 --sort latency_ms")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    from search.config import compose_config
    from search.driver import run_search

    try:
        run_dir = run_search(compose_config(args))
    except ConfigError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the cause wrote
        return 2
    except KeyboardInterrupt:
        return 130
    print(summary(run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
