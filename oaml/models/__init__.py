"""Models: the student ResNet-18 family and any timm network as a teacher, behind one factory."""

from oaml.models.factory import MODELS, ModelSpec, create_model

__all__ = ["MODELS", "ModelSpec", "create_model"]
