"""The run folder: trials.csv, pareto.csv and the Pareto members' models and cards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import optuna
import pandas as pd

from search.files import write_atomically, write_bytes, write_text
from search.results.pareto import Intervals, pareto_mask
from search.runtime.session_settings import runtime_settings
from search.study import OUTCOME

CANDIDATE_COLUMNS = ["target", "quant_bits", "quant_mode", "prune_rate", "prune_round_to", "distill_temperature", "distill_alpha",
                     "parallelism", "threads", "micro_batches", "batch_size"]
METRIC_COLUMNS = ["prune_removed", "accuracy", "latency_ms", "latency_ci_low_ms", "latency_ci_high_ms", "latency_p95_ms", "latency_cv",
                  "latency_repeats", "throughput_ips", "energy_mj", "energy_ci_low_mj", "energy_ci_high_mj",
                  "energy_source", "size_bytes", "peak_memory_bytes"]
# final: the figures come from the quiet phase's re-measurement (search_latency_ms keeps the
# p50 measured during the search, for comparison).
COLUMNS = ["trial", "state", *CANDIDATE_COLUMNS, *METRIC_COLUMNS, "final", "search_latency_ms", "duration_s", "node",
           "baseline", "started_at", "completed_at", "error"]
# Integers that may be blank (failed trials, unpruned models): nullable, so "8" is not written "8.0".
INTEGER_COLUMNS = ["quant_bits", "prune_round_to", "threads", "micro_batches", "batch_size", "latency_repeats", "size_bytes",
                   "peak_memory_bytes"]


def trial_row(trial: optuna.trial.FrozenTrial, final: dict[str, Any] | None = None) -> dict[str, Any]:
    """A trial's row; ``final`` (the quiet phase's figures, if any) overrides what the search measured."""
    attrs = trial.user_attrs
    outcome = attrs.get(OUTCOME) or {}
    metrics = outcome.get("metrics") or {}
    remeasured = bool(final and final.get("metrics"))
    row = {"trial": trial.number, "state": trial.state.name}
    row.update({k: (attrs.get("candidate") or {}).get(k) for k in CANDIDATE_COLUMNS})
    row.update({k: metrics.get(k) for k in METRIC_COLUMNS})
    if remeasured:
        row.update({k: v for k, v in final["metrics"].items() if k in METRIC_COLUMNS})
    row.update(final=remeasured, search_latency_ms=metrics.get("latency_ms"), duration_s=outcome.get("duration_s"),
               node=final["node"] if remeasured else outcome.get("node"), baseline=bool(attrs.get("baseline", False)),
               started_at=_iso(trial.datetime_start), completed_at=_iso(trial.datetime_complete),
               error=outcome.get("error") or attrs.get("error", ""))
    return row


def _iso(moment) -> str | None:
    return moment.isoformat(timespec="milliseconds") if moment else None


def trials_table(trials: Sequence[optuna.trial.FrozenTrial], finals: dict[int, dict[str, Any]] | None = None) -> pd.DataFrame:
    finals = finals or {}
    # WAITING: queued params (a cover trial, a re-asked draw) not yet asked for: not a trial yet
    rows = [trial_row(t, finals.get(t.number)) for t in trials if t.state != optuna.trial.TrialState.WAITING]
    return pd.DataFrame(rows, columns=COLUMNS).astype({c: "Int64" for c in INTEGER_COLUMNS})


def pareto_table(table: pd.DataFrame, objectives: Sequence[tuple[str, str]], intervals: Intervals | None = None) -> pd.DataFrame:
    """Completed trials that no other completed trial dominates beyond measurement noise."""
    done = table[table["state"] == "COMPLETE"]
    return done[pareto_mask(done, objectives, intervals)] if len(done) else done


def target_fronts(table: pd.DataFrame, objectives: Sequence[tuple[str, str]],
                  intervals: Intervals | None = None) -> dict[str, pd.DataFrame]:
    """Each target's own front, for a study across several targets ({} for one target)."""
    done = table[table["state"] == "COMPLETE"]
    names = sorted(done["target"].dropna().unique())
    if len(names) < 2:
        return {}
    return {name: pareto_table(table[table["target"] == name], objectives, intervals) for name in names}


def front_members(front: pd.DataFrame, per_target: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Trials on the overall front or on their target's: the models a run keeps and re-times."""
    if not per_target:
        return front
    return pd.concat([front, *per_target.values()]).drop_duplicates("trial").sort_values("trial")


def write_tables(run_dir: Path, table: pd.DataFrame, front: pd.DataFrame,
                 per_target: dict[str, pd.DataFrame] | None = None) -> None:
    """trials.csv, pareto.csv and, across several targets, pareto-<target>.csv for each."""
    write_atomically(run_dir / "trials.csv", lambda p: table.to_csv(p, index=False))
    write_atomically(run_dir / "pareto.csv", lambda p: front.to_csv(p, index=False))
    for name, target_front in (per_target or {}).items():
        write_atomically(run_dir / f"pareto-{name}.csv", lambda p, f=target_front: f.to_csv(p, index=False))


def model_card(row: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """What a caller needs to run the model, and how its figures were measured."""
    target = (run.get("target_configs") or {}).get(row.get("target"), run["target"])
    evaluators, workload = run["evaluators"], run["workload_info"]
    latency = evaluators.get("latency", {})
    clean = {k: (None if pd.api.types.is_scalar(v) and pd.isna(v) else v) for k, v in row.items()}
    return {
        "trial": clean["trial"],
        "model_file": f"trial-{clean['trial']}.onnx",
        "workload": workload["name"],
        "input": {"name": workload["input_name"], "shape": ["batch", *workload["input_shape"]],
                  "dtype": "float32", "preprocessing": workload["preprocessing"]},
        "output": {"name": workload["output_name"], "meaning": workload["output_meaning"]},
        "parameters": {k: clean[k] for k in ("quant_bits", "quant_mode", "prune_rate", "prune_round_to", "distill_temperature", "distill_alpha")},
        "runtime": {"target": target["name"], "provider": target["provider"],
                    **runtime_settings(clean["parallelism"] or "sequential", clean["threads"] or 1,
                                       clean.get("micro_batches")),
                    "batch_size": clean["batch_size"]},
        "metrics": {k: clean[k] for k in METRIC_COLUMNS},
        "final": bool(clean.get("final")),
        "measured": {
            "accuracy": "top-1 on the workload's held-out test split, through this ONNX model",
            "latency": (f"p50 (with a distribution-free ~95 % interval) and p95 of timed calls on a batch of "
                        f"{clean['batch_size']} after {latency.get('warmup')} warm-up calls, repeated until the "
                        f"interval was within +-{latency.get('ci_rel')} of the p50 or {latency.get('budget_s')} s "
                        f"passed, on node {clean['node']} with no other trial building or measuring there"
                        + ("; re-measured in the quiet phase after the search" if clean.get("final")
                           else "; measured during the search (not re-measured)")),
            "energy": _energy_note(clean["energy_source"], target),
            "size": "bytes of the ONNX file",
        },
    }


def _energy_note(source: str | None, target: dict[str, Any]) -> str:
    if source == "estimate":
        return (f"ESTIMATE, not a measurement: process CPU seconds x {target['watts_per_core']} W per core "
                f"+ {target['idle_watts']} W x wall time, per input")
    return f"measured by {source} counters over a window of calls, per input (rapl counts the whole CPU package)"


def sync_models(run_dir: Path, front: pd.DataFrame, new_models: dict[int, bytes], run: dict[str, Any],
                refresh_cards: bool = False) -> None:
    """Make models/ hold exactly the front: write new members, drop trials that left it.

    During the search a trial that leaves the front never returns to it (the dominating
    trial stays, with its figures), so only models of trials just finished are held in
    memory. The quiet phase changes figures, so a trial may re-enter; it rebuilds that
    model and hands it in as new, and asks for every card to be rewritten.
    """
    models = run_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    members = set(front["trial"].astype(int))
    for row in front.to_dict("records"):
        trial = int(row["trial"])
        onnx_path = models / f"trial-{trial}.onnx"
        card_path = models / f"trial-{trial}.json"
        if trial in new_models:
            write_bytes(onnx_path, new_models[trial])
        if onnx_path.exists() and (refresh_cards or trial in new_models or not card_path.exists()):
            write_text(card_path, json.dumps(model_card(row, run), indent=2, default=str))
    for path in models.glob("trial-*.*"):
        number = path.stem.split("-", 1)[1]
        if number.isdigit() and int(number) not in members:
            path.unlink()
