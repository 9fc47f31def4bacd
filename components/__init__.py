"""Kubeflow Pipelines components: one per stage, each a typed signature, a docstring and one
call into `oaml.stages`. All run in the project image (`docker/Dockerfile`), which holds oaml
and kfp, so nothing is installed at run time."""

from __future__ import annotations

from functools import partial

from kfp import dsl

from oaml import __version__

DEFAULT_IMAGE = f"ghcr.io/oaml/oaml:{__version__}"

# Every component: the project image, no pip install of kfp or oaml when the pod starts.
component = partial(dsl.component, base_image=DEFAULT_IMAGE, install_kfp_package=False)
