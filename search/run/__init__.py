"""The driver's side of the Ray wall: the loop, the dispatcher, the re-timing phase, the run folder, the
cluster, and what the run keeps (the artifact store's actor, the recovery rungs' history, the manifest).

May import anything in the package but the commands (search/__main__, api, pick, report); the worker's
side (search/trial/) is reached only through the task functions and the typed messages.
"""
