"""The worker's side of the Ray wall: one trial built by the knobs and measured by the evaluators, in a Ray
worker. It takes a ``TrialRequest`` and returns a ``TrialResult`` (search/core/messages.py), and never
imports the driver's side (search/run/) or the search strategy (search/strategy/)."""
