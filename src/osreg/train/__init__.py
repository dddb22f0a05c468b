"""Training code (kept apart from the models' inference modules)."""
