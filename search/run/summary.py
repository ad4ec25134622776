"""The summary a finished run prints: the front, each objective's best against the baseline, and what the
run's stopping rules, refinement and artifact store did."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from search.core import attributes
from search.core.constraints import VIOLATION
from search.config import plugins_from_config
from search.results.tables import met_limits
from search.run.store import FOLDER, ArtifactFolder
from search.strategy.study import load_run_study


def summary(run_dir: Path) -> str:
    """The front, and each objective's best against the baseline, in the columns the run's plugins declare."""
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    schema = plugins_from_config(config).schema
    front = pd.read_csv(run_dir / "pareto.csv")
    table = pd.read_csv(run_dir / "trials.csv")
    base = table[table["baseline"] & (table["state"] == "COMPLETE")]
    varied = [f for f in schema.field_names if f in table.columns and table[f].nunique() > 1]
    metrics = [m for m, _ in schema.objectives]
    first, direction = schema.objectives[0]
    heading = "Pareto front of the feasible trials" if schema.constraints else "Pareto front"
    lines = [f"\n{heading} ({len(front)} of {int((table['state'] == 'COMPLETE').sum())} completed trials):",
             front[["trial", *varied, *metrics]].sort_values(first, ascending=direction == "minimize")
             .to_string(index=False)]
    lines += [f"front on target {path.stem.split('-', 1)[1]}: {len(pd.read_csv(path))} member(s), {path.name}"
              for path in sorted(run_dir.glob("pareto-*.csv"))]
    if schema.constraints:
        lines.append(feasibility_line(table, front, schema, run_dir))
    if len(base) and len(front):
        lines.append(_versus_baseline(base.iloc[0], front, schema))
    ended, refined = _study_notes(run_dir)
    if ended:
        completed = int((table["state"] == "COMPLETE").sum())
        lines.append(f"stopped early: {ended} ({completed} completed trials of trials={config['trials']})")
    # an all-empty error column reads as float: no fillna("") on it (pandas warns)
    stopped = table["error"].map(lambda e: isinstance(e, str) and e.startswith("stopped after recovery epoch"))
    if stopped.any():
        lines.append(f"recovery rungs: {int(stopped.sum())} trial(s) stopped part way through recovery, as they could "
                     f"not reach the front (PRUNED rows, the reason in trials.csv), after "
                     f"{table[stopped]['duration_s'].sum():.0f} s of the {table['duration_s'].sum():.0f} s "
                     "all trials took")
    if refined:
        on_front = len(set(refined) & set(front["trial"].astype(int)))
        lines.append(f"runtime refinement: {len(refined)} trial(s) re-ran a front member's model under a runtime "
                     f"setting another front member runs (search/strategy/refine.py); {on_front} of them on the front")
    lines.append(_store_note(run_dir, table))
    lines.append(f"results: {run_dir}/  (pareto.png, pareto.html, history.png, importance.png, trials.csv, models/)")
    sort = next((m for m, d in schema.objectives if d == "minimize"), first)
    lines.append(f"pick one: python -m search.pick {run_dir} --sort {sort}")
    return "\n".join(lines)


def feasibility_line(table: pd.DataFrame, front: pd.DataFrame, schema, run_dir: Path) -> str:
    """How many completed trials met the run's limits; where none did, the closest, whose model is kept."""
    done = table[table["state"] == "COMPLETE"]
    feasible = met_limits(done)
    limits = schema.constraints.text()
    if feasible.any():
        return f"constraints {limits}: {int(feasible.sum())} of {len(done)} completed trials feasible"
    if done.empty or front.empty:
        return f"constraints {limits}: no trial completed"
    closest = front.sort_values([VIOLATION, "trial"]).iloc[0]
    trial = int(closest["trial"])
    return (f"constraints {limits}: no trial met them; the closest is trial {trial} (violation "
            f"{float(closest[VIOLATION]):.3g}, the sum of its relative misses), its model kept in "
            f"{run_dir}/models/trial-{trial}.onnx")


def _store_note(run_dir, table) -> str:
    """What the run's artifact store served: trials that reused a build, and the build time that saved."""
    built = table[table["state"].isin(["COMPLETE", "FAIL"])]  # trials.csv has the columns: the schema's tail
    hits, saved = built["store_hits"].fillna(0), float(built["build_s_saved"].fillna(0).sum())
    count, size = ArtifactFolder(run_dir / FOLDER).usage()
    return (f"artifact store: {int((hits > 0).sum())} of {len(built)} trials reused a stored build "
            f"({int(hits.sum())} hits), {saved:.1f} s of build time saved; {count} artifacts, "
            f"{size / 2**20:.1f} MiB in {FOLDER}/")


def _study_notes(run_dir) -> tuple[str, list[int]]:
    """Why the search stopped early ("" it did not), and the trials that re-ran a front member's model."""
    study = load_run_study(run_dir)
    refined = [t.number for t in study.get_trials(deepcopy=False) if attributes.refines(t) is not None]
    return attributes.stop_of(study), refined


def _versus_baseline(b, front, schema) -> str:
    """Each minimized objective's best member against the fp32 baseline, with the first maximized
    objective beside it. A figure per call (latency) is compared at the baseline's batch size only:
    a call on fewer inputs is sooner, not faster."""
    quality = next((m for m, d in schema.objectives if d == "maximize"), None)
    parts = []
    for metric, direction in schema.objectives:
        if direction != "minimize":
            continue
        per_batch = getattr(schema.column(metric), "per_batch", False)
        rows = (front[front["batch_size"] == b["batch_size"]] if per_batch else front).dropna(subset=[metric])
        if rows.empty or not b[metric]:
            continue
        best = rows.loc[rows[metric].idxmin()]
        extra = f", {quality} {best[quality]:.4f} vs {b[quality]:.4f}" if quality else ""
        at_batch = f" at batch {int(b['batch_size'])}" if per_batch else ""
        parts.append(f"{metric} {b[metric] / best[metric]:.2f}x lower{at_batch} (trial {int(best['trial'])}{extra})")
    # the re-timing phase times the baseline again with the front: both sides of a ratio come from that phase
    timed = "re-timed with the front" if b.get("final") else "search-time figures: the run was not re-timed"
    return f"vs fp32 baseline (trial {int(b['trial'])}, {timed}): " + "; ".join(parts)
