"""Evaluation: datasets with ground truth, deformation protocols, metrics and the benchmark runner."""
