"""Serving the exported detector: onnxruntime and numpy only (no torch on this path)."""
