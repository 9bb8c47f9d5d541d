"""Model families. Importing this package registers every family in `genlab.models.base.MODELS`."""

from genlab.models import cyclegan, diffusion, latent_diffusion, pix2pix  # noqa: F401  (importing registers the families)
from genlab.models import vae  # noqa: F401  (registers vae and cvae)
from genlab.models.base import MODELS, GenerativeModel, Runtime, get_model_class, register_model

__all__ = ["MODELS", "GenerativeModel", "Runtime", "get_model_class", "register_model"]
