"""Evaluation: confusion matrix → per-class scores, a run scored on a dataset, the report."""
