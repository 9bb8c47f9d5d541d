"""Model families. Importing this package registers every family in `genlab.models.base.MODELS`."""

from genlab.models.base import MODELS, GenerativeModel, Runtime, register_model
from genlab.models.registry import get_model_class

__all__ = ["MODELS", "GenerativeModel", "Runtime", "get_model_class", "register_model"]
