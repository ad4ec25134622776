"""Per parallelism mode, what one run measured: a markdown table from its trials.csv.

    python bench/mode_table.py results/<run>

Latency is per call, so it is compared at batch 32 only; throughput and energy are per
input and compare across batch sizes. Counts show how often the search visited each mode,
precision, int8/16-bit mode and batch size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def mode_rows(done: pd.DataFrame) -> list[str]:
    rows = []
    for mode, group in done.groupby("parallelism"):
        best = group.loc[group["throughput_ips"].idxmax()]
        at32 = group.loc[group["batch_size"] == 32, "latency_ms"]
        latency = f"{at32.median():.3f} ({len(at32)})" if len(at32) else "none at batch 32"
        rows.append(f"| {mode} | {len(group)} | {latency} | {group['throughput_ips'].median():,.0f} | "
                    f"{best['throughput_ips']:,.0f} (trial {best['trial']}, {best['quant_bits']} bits, batch "
                    f"{best['batch_size']}) | {group['energy_mj'].median():.3f} | {group['energy_mj'].min():.3f} |")
    return rows


def main(run: Path) -> None:
    table = pd.read_csv(run / "trials.csv")
    done = table[table["state"] == "COMPLETE"]
    print(f"{run}: {len(done)} of {len(table)} trials completed; energy is {sorted(done['energy_source'].unique())}")
    for column in ("parallelism", "quant_bits", "quant_mode", "batch_size", "target"):
        print(f"{column}: {done[column].fillna('-').value_counts().to_dict()}")
    print("\n| mode | trials | p50 ms at batch 32, median (n) | inputs/s median | inputs/s best | mJ/input median "
          "| mJ/input best |\n|---|---|---|---|---|---|---|")
    print("\n".join(mode_rows(done)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder, results/<run>")
    main(parser.parse_args().run)
