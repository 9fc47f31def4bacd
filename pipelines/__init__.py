"""The OAML Kubeflow pipeline: wiring (oaml_pipeline.py), compile/submit/run-local (runner.py)."""
