"""Joint multi-objective optimization search for trained PyTorch models."""
