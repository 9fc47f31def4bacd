"""oaml: OOD-aware image classifiers trained with Outlier Aware Metric Learning."""

__version__ = "0.1.0"
