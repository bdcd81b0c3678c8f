"""Models: the registry, the teachers (VGGFace2 ResNet-50 / SE-ResNet-50), the student."""
from .registry import build_model, get_spec, list_models, register  # noqa: F401
