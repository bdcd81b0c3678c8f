"""Models: the registry, the teachers (VGGFace2 ResNet-50 / SE-ResNet-50), the student,
and the original's published weights by name (``pretrained(name)``)."""
from .registry import build_model, get_spec, list_models, register  # noqa: F401
# ``tf_cme.models.pretrained`` is the function; the module is reached with
# ``from tf_cme.models.pretrained import ...`` (sys.modules), never as an attribute.
from .pretrained import pretrained, pretrained_path  # noqa: F401,E402
