"""``python -m search.pick RUN``: choose a Pareto member by constraints, copy its model and card."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from collections.abc import Sequence

import pandas as pd

LIMITS = (("min_accuracy", "accuracy", ">="), ("max_latency_ms", "latency_ms", "<="),
          ("max_energy_mj", "energy_mj", "<="), ("max_size_bytes", "size_bytes", "<="))


class PickError(Exception):
    """Nothing to pick, or the run folder is unusable: one line, exit 2."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m search.pick", description=__doc__)
    parser.add_argument("run", type=Path, help="a run folder, results/<run>")
    parser.add_argument("--min-accuracy", type=float)
    parser.add_argument("--max-latency-ms", type=float)
    parser.add_argument("--max-energy-mj", type=float)
    parser.add_argument("--max-size-bytes", type=float)
    parser.add_argument("--sort", default="latency_ms", help="column to choose by (accuracy: highest; others: lowest)")
    parser.add_argument("--out", type=Path, help="folder to copy the chosen model and its card to")
    return parser.parse_args(argv)


def choose(front: pd.DataFrame, args: argparse.Namespace) -> pd.Series:
    if args.sort not in front.columns:
        raise PickError(f"--sort {args.sort}: no such column; choose from {', '.join(front.columns)}")
    chosen = front
    for option, column, op in LIMITS:
        limit = getattr(args, option)
        if limit is not None:
            chosen = chosen[chosen[column] >= limit] if op == ">=" else chosen[chosen[column] <= limit]
    if chosen.empty:
        asked = ", ".join(f"{o.replace('_', '-')} {getattr(args, o)}" for o, _, _ in LIMITS if getattr(args, o) is not None)
        raise PickError(f"no Pareto member of {len(front)} meets {asked}")
    return chosen.sort_values(args.sort, ascending=args.sort != "accuracy").iloc[0]


def pick(argv: Sequence[str]) -> pd.Series:
    args = parse_args(argv)
    pareto = args.run / "pareto.csv"
    if not pareto.exists():
        raise PickError(f"{args.run} has no pareto.csv: is it a finished run folder?")
    row = choose(pd.read_csv(pareto), args)
    trial = int(row["trial"])
    print(row.to_string())
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for suffix in (".onnx", ".json"):
            source = args.run / "models" / f"trial-{trial}{suffix}"
            if not source.exists():
                raise PickError(f"{source} is missing from the run folder")
            shutil.copy2(source, args.out / source.name)
        print(f"copied trial-{trial}.onnx and trial-{trial}.json to {args.out}")
    return row


def main(argv: Sequence[str] | None = None) -> int:
    try:
        pick(sys.argv[1:] if argv is None else argv)
    except PickError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
