"""The runtime: targets, the parallelism modes' runners, pipeline cuts, session settings and the per-node timing lock.

Imports only the shared top-level modules (errors, files): ONNX Runtime and onnx, never torch, Ray or Optuna,
so a deployment (and the memory probe's fresh process) can run a model with it alone.
"""
