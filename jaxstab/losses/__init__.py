"""Losses: pure functions of predictions and targets returning losses (and metrics)."""
