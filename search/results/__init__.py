"""The results: tables, the noise-aware front, cards, plots, the HTML page, progress and history.

Views of study.db and the run's plugin declarations (search.core.schema); imports the shared top-level
modules and search.runtime, never search.run.
"""
