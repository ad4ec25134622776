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
    varied = [c for c in ("target", "batch_size") if table[c].nunique() > 1]
    cols = ["trial", *varied[:1], "quant_bits", "quant_mode", "prune_rate", "distill_temperature", "parallelism",
            "threads", *varied[1:], "accuracy", "latency_ms", "energy_mj", "size_bytes"]
    lines = [f"\nPareto front ({len(front)} of {int((table['state'] == 'COMPLETE').sum())} completed trials):",
             front[cols].sort_values("latency_ms").to_string(index=False)]
    lines += [f"front on target {path.stem.split('-', 1)[1]}: {len(pd.read_csv(path))} member(s), {path.name}"
              for path in sorted(run_dir.glob("pareto-*.csv"))]
    if len(base):
        lines.append(_versus_baseline(base.iloc[0], front))
    lines.append(f"results: {run_dir}/  (pareto.png, pareto.html, history.png, importance.png, trials.csv, models/)")
    lines.append(f"pick one: python -m search.pick {run_dir} --min-accuracy 0.97 --sort latency_ms")
    return "\n".join(lines)


def _versus_baseline(b, front) -> str:
    """Ratios against the fp32 baseline; latency only at the baseline's batch size (a call on
    fewer inputs is sooner, not faster), throughput across batch sizes."""
    same_batch = front[front["batch_size"] == b["batch_size"]]
    smallest = front.loc[front["size_bytes"].idxmin()]
    parts = []
    if len(same_batch):
        fastest = same_batch.loc[same_batch["latency_ms"].idxmin()]
        parts.append(f"fastest {b['latency_ms'] / fastest['latency_ms']:.2f}x faster at batch {int(b['batch_size'])} "
                     f"(trial {int(fastest['trial'])}, accuracy {fastest['accuracy']:.4f} vs {b['accuracy']:.4f})")
    if front["batch_size"].nunique() > 1:
        busiest = front.loc[front["throughput_ips"].idxmax()]
        parts.append(f"most throughput {busiest['throughput_ips'] / b['throughput_ips']:.2f}x "
                     f"(trial {int(busiest['trial'])}, batch {int(busiest['batch_size'])})")
    parts.append(f"smallest {b['size_bytes'] / smallest['size_bytes']:.1f}x smaller (accuracy {smallest['accuracy']:.4f})")
    return f"vs fp32 baseline (trial {int(b['trial'])}): " + "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    from search.config import compose_config
    from search.run.driver import run_search

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
