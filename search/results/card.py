"""The Pareto members' models and their cards: what a caller needs to run a model, and how its figures were measured."""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import pandas as pd

from search.core.files import write_bytes, write_text
from search.core.schema import Schema
from search.results.intervals import Spread, spread_note

MACHINES_FILE = "machines.json"  # each node's machine, by node name: what a card's manifest names


def _runtime(row: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """The runtime settings the row's knobs make of its fields."""
    return schema.runtime({f.name: row.get(f.name) for f in schema.fields if row.get(f.name) is not None})


def _inputs(workload: dict[str, Any], row: dict[str, Any]) -> list[dict[str, Any]]:
    """Each input's name, dtype, shape with its symbolic axes, and the shape latency was measured at
    (the trial's batch size by the test split's other axes)."""
    specs = workload.get("inputs") or [{"name": workload["input_name"], "dtype": "float32",
                                        "shape": ["batch", *workload["input_shape"]],
                                        "measured_shape": workload["input_shape"], "preprocessing": ""}]
    batch = row.get("batch_size")
    return [{**spec,
             "measured_shape": [batch, *spec["measured_shape"]] if batch is not None else spec["measured_shape"]}
            for spec in specs]


def read_machines(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``machines.json`` (JSON: nothing from a run folder is unpickled); {} when absent or unreadable."""
    try:
        return json.loads((run_dir / MACHINES_FILE).read_text())
    except (OSError, ValueError):
        return {}


def card_manifest(run: dict[str, Any], node: str | None, machines: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """The run's manifest (search/run/manifest.py) with the machine of the node that measured the model,
    where the run recorded it; otherwise the driver's machine, said so."""
    manifest = dict(run.get("manifest") or {})
    measured = (machines or {}).get(node or "")
    manifest["node"] = node
    if measured:
        manifest["machine"] = measured
    elif manifest.get("machine"):
        manifest["machine_note"] = "the driver's machine: the measuring node's was not recorded"
    return manifest


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if pd.api.types.is_scalar(v) and pd.isna(v) else v) for k, v in row.items()}


def versus_baseline(row: dict[str, Any], baseline: dict[str, Any] | None, schema: Schema) -> dict[str, Any] | None:
    """Each minimized objective of the model against the fp32 baseline's: both figures and baseline / model.
    A figure per call (latency) is compared at the baseline's batch size only: a smaller batch is sooner, not
    faster. The baseline's figures are the re-timing phase's when it ran (``figures`` says which)."""
    if baseline is None:
        return None
    base = _plain_row(baseline)
    found: dict[str, Any] = {"trial": base["trial"],
                             "figures": "re-timed with the front" if base.get("final") else "search-time"}
    for metric, direction in schema.objectives:
        if direction != "minimize" or not base.get(metric) or not row.get(metric):
            continue
        if getattr(schema.column(metric), "per_batch", False) and row.get("batch_size") != base.get("batch_size"):
            continue
        found[metric] = {"baseline": base[metric], "model": row[metric],
                         "baseline_over_model": base[metric] / row[metric]}
    return found


ONE_SESSION = ("timed once, during the search: the interval is that session's own and a new session moves more "
               "(the re-timing phase measures how much, and widens the intervals of the figures it re-times)")


def interval_notes(row: dict[str, Any], schema: Schema, spreads: Mapping[str, Spread]) -> dict[str, Any]:
    """What each interval of the card covers: a new session (re-timed, results/intervals.py) or one session."""
    if row.get("final") and spreads:
        return spread_note(spreads, schema.intervals)
    return {metric: {"meaning": ONE_SESSION} for metric in schema.intervals if metric in schema.timed}


def model_card(row: dict[str, Any], run: dict[str, Any], schema: Schema,
               machines: dict[str, dict[str, Any]] | None = None,
               baseline: dict[str, Any] | None = None, spreads: Mapping[str, Spread] | None = None) -> dict[str, Any]:
    """What a caller needs to run the model, how its figures were measured, what their intervals cover
    (``spreads``: the run's, results/intervals.py), and how they compare with the fp32 ``baseline``'s row."""
    target = (run.get("target_configs") or {}).get(row.get("target"), run["target"])
    workload = run["workload_info"]
    clean = _plain_row(row)
    return {
        "trial": clean["trial"],
        "model_file": f"trial-{clean['trial']}.onnx",
        "workload": workload["name"],
        "input": {"name": workload["input_name"], "shape": ["batch", *workload["input_shape"]],
                  "dtype": _inputs(workload, clean)[0]["dtype"], "preprocessing": workload["preprocessing"]},
        "output": {"name": workload["output_name"], "meaning": workload["output_meaning"]},
        "inputs": _inputs(workload, clean),
        "outputs": workload.get("outputs") or [{"name": workload["output_name"],
                                                "meaning": workload["output_meaning"]}],
        "metric": workload.get("metric") or {"name": "accuracy", "direction": "maximize"},
        "parameters": {f.name: clean.get(f.name) for f in schema.fields if f.applies_to == "build"},
        "runtime": {"target": target["name"], "provider": target["provider"], **_runtime(clean, schema),
                    "batch_size": clean.get("batch_size")},
        "metrics": {k: clean.get(k) for k in schema.result_columns},
        "final": bool(clean.get("final")),
        # metrics holds the re-timing phase's figures where it ran; these are the search's own, for comparison
        "search_metrics": {m: clean.get(f"search_{m}") for m in schema.timed},
        "versus_baseline": versus_baseline(clean, baseline, schema),
        "intervals": interval_notes(clean, schema, spreads or {}),
        "measured": {name: note(clean, target) for name, note in schema.notes.items() if note(clean, target)},
        "manifest": card_manifest(run, clean.get("node"), machines),
    }


def sync_models(run_dir: Path, front: pd.DataFrame, new_models: dict[int, bytes], run: dict[str, Any],
                schema: Schema, refresh_cards: bool = False, machines: dict[str, dict[str, Any]] | None = None,
                baseline: dict[str, Any] | None = None, spreads: Mapping[str, Spread] | None = None) -> None:
    """Make models/ hold exactly the front: write new members, drop trials that left it.

    During the search a trial that leaves the front never returns to it (the dominating
    trial stays, with its figures), so only models of trials just finished are held in
    memory. The re-timing phase changes figures, so a trial may re-enter; it rebuilds that
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
            card = model_card(row, run, schema, machines, baseline, spreads)
            write_text(card_path, json.dumps(card, indent=2, default=str))
    for path in models.glob("trial-*.*"):
        number = path.stem.split("-", 1)[1]
        if number.isdigit() and int(number) not in members:
            path.unlink()
