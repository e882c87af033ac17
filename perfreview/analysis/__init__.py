"""Analyses: small modules of pure functions over the event table (and the run's metadata)."""
