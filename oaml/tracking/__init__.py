"""Experiment tracking and the model registry (MLflow): runs per pipeline and stage, promotion."""
