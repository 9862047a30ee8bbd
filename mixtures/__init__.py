"""Mixtures: curriculum plans, the training manifest and audit reports (not built yet)."""
