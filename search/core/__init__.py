"""The shared vocabulary: what every part of the project speaks, importing nothing else of it.

errors (the one-line refusals), files (atomic writes), schema (the columns plugins declare), candidate
(what a trial builds), metrics (task metrics), messages (the typed messages across the Ray wall),
attributes (the one codec of a trial's stored attributes) and optuna_private (Optuna's private API,
gathered). Import the module you need (``from search.core.schema import Column``); users name the
public fronts ``search.schema``, ``search.metrics`` and ``search.errors``.
"""
