"""Patch classes: the baseline rules, the learned model (inference) and its training."""
