"""ONNX export of the detector: preprocessing, the student and the energy head in one graph."""
