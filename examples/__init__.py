"""Complete examples of bringing your own model and data; run from the repository root."""
