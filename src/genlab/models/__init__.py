"""Model families. Importing this package registers every family in `genlab.models.base.MODELS`."""

from genlab.models import (  # noqa: F401  (importing registers the families)
    cyclegan,  # noqa: F401  (registers CycleGAN)
    diffusion,
    gan,
    latent_diffusion,
    pix2pix,
    vae,  # noqa: F401  (registers vae and cvae)
)
from genlab.models.base import MODELS, GenerativeModel, Runtime, get_model_class, register_model

__all__ = ["MODELS", "GenerativeModel", "Runtime", "get_model_class", "register_model"]
