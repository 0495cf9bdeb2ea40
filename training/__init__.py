"""Uplift learners, uplift metrics, training-set labels and MLflow logging/registry helpers."""
