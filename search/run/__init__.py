"""The run: the driver's loop, the dispatcher, the Ray worker's trial, the re-timing phase, the study and the cluster.

May import anything in the package; nothing outside search/run/ imports it (commands aside).
"""
