"""Hyper-parameter sweeps: the search (Optuna) and its trials, each a job of its own."""
