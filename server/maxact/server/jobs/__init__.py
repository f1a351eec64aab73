"""Persisted scans: the store, background jobs, checkpoints and resume."""
