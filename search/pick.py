"""``python -m search.pick RUN``: choose a model by constraints; ``--out`` writes its bundle (search/bundle/):
the model and card (rebuilt if not kept), with what runs and verifies it with onnxruntime and numpy alone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from collections.abc import Sequence

import pandas as pd
from omegaconf import OmegaConf

from search.core.constraints import FEASIBLE
from search.core.errors import ConfigError
from search.config import Plugins, plugins_from_config
from search.results.chosen import describe_choice
from search.results.tables import met_limits
from search.core.schema import Column, Schema

# Today's named options, kept: each is the generic --min/--max on a column of the default evaluators.
LIMITS = (("min_accuracy", "accuracy", ">="), ("max_latency_ms", "latency_ms", "<="),
          ("max_energy_mj", "energy_mj", "<="), ("max_size_bytes", "size_bytes", "<="),
          # service limits: the model and its runtime configuration are chosen together
          ("max_p95_ms", "latency_p95_ms", "<="), ("min_throughput_ips", "throughput_ips", ">="),
          ("max_memory_bytes", "peak_memory_bytes", "<="))


class PickError(Exception):
    """Nothing to pick, or the run folder is unusable: one line, exit 2."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m search.pick", description=__doc__)
    parser.add_argument("run", type=Path, help="a run folder, results/<run>")
    parser.add_argument("--min-accuracy", type=float)
    parser.add_argument("--max-accuracy-drop", type=float, help="accuracy at least the baseline's minus this")
    parser.add_argument("--metric-at", type=float, metavar="VALUE",
                        help="the workload's metric no worse than VALUE (at least for accuracy, at most for mse)")
    parser.add_argument("--max-metric-drop", type=float, metavar="D",
                        help="the workload's metric no worse than the baseline's by more than D")
    parser.add_argument("--max-latency-ms", type=float)
    parser.add_argument("--max-energy-mj", type=float)
    parser.add_argument("--max-size-bytes", type=float)
    parser.add_argument("--max-p95-ms", type=float, help="latency p95 (ms per batch) at most this")
    parser.add_argument("--min-throughput-ips", type=float, help="throughput (inputs/s) at least this")
    parser.add_argument("--max-memory-bytes", type=float, help="peak session memory at most this")
    parser.add_argument("--min", action="append", default=[], metavar="COLUMN=VALUE", dest="min_limits",
                        help="keep rows whose COLUMN is at least VALUE (any numeric column; repeatable)")
    parser.add_argument("--max", action="append", default=[], metavar="COLUMN=VALUE", dest="max_limits",
                        help="keep rows whose COLUMN is at most VALUE (any numeric column; repeatable)")
    parser.add_argument("--target", help="only models measured on this target")
    parser.add_argument("--sort", default="latency_ms",
                        help="column to choose by (``metric``: the workload's): a maximized objective highest "
                             "first, anything else lowest first")
    parser.add_argument("--all", action="store_true", help="choose among every completed trial, not only the front")
    parser.add_argument("--list", action="store_true", help="print the models that qualify instead of choosing one")
    parser.add_argument("--out", type=Path, help="folder to write the chosen model's bundle to: the model, its card, "
                        "a sample with its outputs, run.py and verify.py (onnxruntime and numpy only)")
    return parser.parse_args(argv)


def candidates(run: Path, everything: bool, target: str | None = None) -> pd.DataFrame:
    """The completed trials to choose from: the front (that target's own front, in a study across
    targets: one of its members may be beaten overall by another target), or every trial."""
    per_target = f"pareto-{target}.csv"
    name = "trials.csv" if everything else per_target if target and (run / per_target).exists() else "pareto.csv"
    if not (run / name).exists():
        raise PickError(f"{run} has no {name}: is it a finished run folder?")
    table = pd.read_csv(run / name)
    return table[table["state"] == "COMPLETE"]


def baseline_value(run: Path, column: str, option: str) -> float:
    table = pd.read_csv(run / "trials.csv")
    base = table[table["baseline"].astype(bool) & (table["state"] == "COMPLETE")]
    if base.empty or column not in base.columns:
        raise PickError(f"{option}: {run} has no completed baseline row with {column} to measure the drop from")
    return float(base[column].iloc[0])


def metric_of(config: dict) -> tuple[str, str]:
    """The workload's metric column and its direction (accuracy for a run made before metrics were plugins)."""
    metric = (config.get("workload_info") or {}).get("metric") or {}
    return metric.get("name", "accuracy"), metric.get("direction", "maximize")


def limits(args: argparse.Namespace, table: pd.DataFrame, config: dict) -> list[tuple[str, str, float]]:
    """(column, ">=" or "<=", value) from the named options and every --min/--max COLUMN=VALUE."""
    found = [(column, op, getattr(args, option)) for option, column, op in LIMITS if getattr(args, option) is not None]
    metric, direction = metric_of(config)
    no_worse = ">=" if direction == "maximize" else "<="
    if args.metric_at is not None:
        found.append((metric, no_worse, args.metric_at))
    if args.max_metric_drop is not None:
        drop = args.max_metric_drop if direction == "maximize" else -args.max_metric_drop
        found.append((metric, no_worse, baseline_value(args.run, metric, "--max-metric-drop") - drop))
    if args.max_accuracy_drop is not None:
        found.append(("accuracy", ">=", baseline_value(args.run, "accuracy", "--max-accuracy-drop")
                      - args.max_accuracy_drop))
    missing = sorted({column for column, _, _ in found} - set(table.columns))
    if missing:
        raise PickError(f"{args.run} has no column {', '.join(missing)}; its workload's metric is {metric} "
                        "(use --metric-at, or --min/--max COLUMN=VALUE)")
    for op, texts in ((">=", args.min_limits), ("<=", args.max_limits)):
        for text in texts:
            column, sep, value = text.partition("=")
            flag = "--min" if op == ">=" else "--max"
            if not sep or column not in table.columns:
                raise PickError(f"{flag} {text}: expected COLUMN=VALUE with a column of {args.run}/trials.csv "
                                f"({', '.join(table.columns)})")
            try:
                found.append((column, op, float(value)))
            except ValueError:
                raise PickError(f"{flag} {text}: {value!r} is not a number") from None
    return found


def qualifying(table: pd.DataFrame, args: argparse.Namespace, schema: Schema, config: dict) -> pd.DataFrame:
    if args.sort == "metric":
        args.sort = metric_of(config)[0]
    if args.sort not in table.columns:
        raise PickError(f"--sort {args.sort}: no such column; choose from {', '.join(table.columns)}")
    chosen = table
    for column, op, limit in limits(args, table, config):
        values = pd.to_numeric(chosen[column], errors="coerce")
        chosen = chosen[values >= limit] if op == ">=" else chosen[values <= limit]
    if args.target is not None:
        chosen = chosen[chosen["target"] == args.target]
    # ties go to the earliest trial, so the same command always picks the same model
    highest_first = schema.direction(args.sort) == "maximize"
    keys, ascending = [args.sort, "trial"], [not highest_first, True]
    if FEASIBLE in chosen.columns:  # a constrained run: the trials that met its limits first
        chosen = chosen.assign(_infeasible=~met_limits(chosen))
        keys, ascending = ["_infeasible", *keys], [True, *ascending]
    return chosen.sort_values(keys, ascending=ascending, kind="stable").drop(columns="_infeasible", errors="ignore")


def _asked(args: argparse.Namespace) -> str:
    options = [o for o, _, _ in LIMITS] + ["max_accuracy_drop", "metric_at", "max_metric_drop", "target"]
    named = [f"--{o.replace('_', '-')} {getattr(args, o)}" for o in options if getattr(args, o) is not None]
    generic = [f"--min {t}" for t in args.min_limits] + [f"--max {t}" for t in args.max_limits]
    return ", ".join(named + generic) or "no limits"


def run_schema(run: Path) -> tuple[dict, Schema]:
    """The run's stored config and the schema its plugins declare."""
    config, plugins = run_plugins(run)
    return config, plugins.schema


def run_plugins(run: Path) -> tuple[dict, Plugins]:
    """The run's stored config and its plugins (their schema among them)."""
    if not (run / "config.yaml").exists():
        raise PickError(f"{run} has no config.yaml: is it a run folder (results/<run>)?")
    config = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True)
    try:
        return config, plugins_from_config(config)
    except ConfigError as exc:
        raise PickError(f"{run}/config.yaml: {exc}") from None


def setting_groups(plugins: Plugins) -> list[list[Column]]:
    """Each knob's columns (its fields, then its facts), then the schema's fields no knob owns (the target)."""
    groups: list[list[Column]] = [[*k.fields, *k.facts] for k in plugins.knobs if k.fields]
    owned = {c.name for group in groups for c in group}
    return groups + [[f] for f in plugins.schema.fields if f.name not in owned]


def front_of(run: Path, target: str | None) -> tuple[str, set[int]]:
    """The front a pick is judged against (a target's own, in a study across targets) and its trials."""
    per_target = run / f"pareto-{target}.csv"
    path, name = (per_target, f"target {target}'s front") if target and per_target.exists() else \
        (run / "pareto.csv", "the front")
    return name, set(pd.read_csv(path)["trial"].astype(int)) if path.exists() else set()


def describe(run: Path, row: pd.Series, plugins: Plugins, target: str | None) -> str:
    """What is printed about the chosen row (search/results/chosen.py), with where its model is."""
    trial = int(row["trial"])
    front, members = front_of(run, target)
    kept = run / "models" / f"trial-{trial}.onnx"
    model = (f"{kept} (card {kept.with_suffix('.json').name})" if kept.exists() else
             "not kept in the run folder; --out DIR rebuilds it from its parameters")
    return describe_choice(row, plugins.schema, setting_groups(plugins), front if trial in members else None, model)


def list_columns(schema: Schema, table: pd.DataFrame) -> list[str]:
    """The trial, the knobs' fields that vary, the objectives (and a constrained run's feasibility)."""
    varied = [f for f in schema.field_names if f in table.columns and table[f].nunique(dropna=False) > 1]
    return ["trial", *varied, *(m for m, _ in schema.objectives), *schema.constraint_columns, "final"]


def listing(table: pd.DataFrame, schema: Schema) -> str:
    """The table as ``--list`` prints it: blank where a knob was not applied (not NaN), integers without ``.0``."""
    shown = table.copy()
    for column in set(schema.integer_columns) & set(shown.columns):
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else str(int(v)))
    return shown.to_string(index=False, na_rep="")


def model_and_card(run: Path, row: pd.Series, config: dict, schema: Schema) -> tuple[bytes, dict]:
    """The kept model and its card, or the model rebuilt from its parameters and a card made for it."""
    trial = int(row["trial"])
    kept = run / "models" / f"trial-{trial}.onnx"
    if kept.exists() and kept.with_suffix(".json").exists():
        try:
            return kept.read_bytes(), json.loads(kept.with_suffix(".json").read_text())
        except ValueError as exc:
            raise PickError(f"{kept.with_suffix('.json')}: not a readable card ({exc})") from None
    from search.results.card import model_card, read_machines
    from search.results.tables import study_spreads
    from search.strategy.study import load_run_study
    from search.run.rebuild import rebuild

    print(f"trial {trial} was not kept (not on the front); rebuilding it from its parameters ...", flush=True)
    rebuilt = rebuild(run, trial)
    name, value = rebuilt.metric, rebuilt.value
    if abs(value - float(row[name])) > 1e-9:
        print(f"warning: the rebuilt model scores {name} {value:.4f}, the table says "
              f"{float(row[name]):.4f}: it is not the same model (was the teacher retrained?)", file=sys.stderr)
    table = pd.read_csv(run / "trials.csv")
    baseline = table[table["baseline"] & (table["state"] == "COMPLETE")]
    card = model_card({**row.to_dict(), name: value, "size_bytes": len(rebuilt.model_bytes)}, config, schema,
                      read_machines(run), baseline.iloc[0].to_dict() if len(baseline) else None,
                      study_spreads(load_run_study(run), schema))
    return rebuilt.model_bytes, card


def run_sample(run: Path, config: dict) -> dict:
    """The rows the run timed on (sample.npz); a run made before it kept one loads its workload again."""
    from search.bundle.sample import read_run_sample

    rows = read_run_sample(run)
    if rows is not None:
        return rows
    try:
        from hydra.utils import instantiate

        from search.workloads import check_workload

        workload = check_workload(instantiate(config["workload"]), str(config["workload"].get("_target_", "?")))
    except Exception as exc:  # noqa: BLE001 - any failure to load it means the same to the user
        raise PickError(f"{run} has no sample.npz (it was made before bundles) and its workload could not be "
                        f"loaded again ({type(exc).__name__}: {exc}); re-run the search to bundle its models") from None
    return workload.test.batch_of(len(workload.test))


def write_out(run: Path, row: pd.Series, out: Path, config: dict, schema: Schema) -> None:
    from search.bundle.write import write_bundle

    model_bytes, card = model_and_card(run, row, config, schema)
    try:
        write_bundle(out, model_bytes, card, config, run_sample(run, config), run.resolve().name)
    except OSError as exc:
        raise PickError(f"cannot write the bundle to {out}: {exc.strerror or exc}") from None
    except ValueError as exc:  # the run's sample does not fit the model (a run folder edited by hand)
        raise PickError(f"cannot bundle trial {int(row['trial'])}: {exc}") from None
    print(f"wrote the bundle of trial {int(row['trial'])} to {out}: check it here or on the deployment machine "
          f"with: python {out / 'verify.py'}")


def pick(argv: Sequence[str]) -> pd.Series | None:
    args = parse_args(argv)
    table = candidates(args.run, args.all, args.target)
    config, plugins = run_plugins(args.run)
    schema = plugins.schema
    chosen = qualifying(table, args, schema, config)
    if args.list:
        print(listing(chosen[[c for c in list_columns(schema, table) if c in chosen.columns]], schema))
        return None
    if chosen.empty:
        raise PickError(f"no {'completed trial' if args.all else 'Pareto member'} of {len(table)} meets {_asked(args)}")
    row = chosen.iloc[0]
    print(describe(args.run, row, plugins, args.target))
    if args.out:
        write_out(args.run, row, args.out, config, schema)
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
