"""Evaluation: full-reference metrics, the benchmark protocol (degrade, restore, score) and the
demo."""
