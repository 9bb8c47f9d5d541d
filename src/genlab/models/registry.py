"""The families by name: importing this module imports every family module, which registers it in
`genlab.models.base.MODELS` (the families import `base`, never this module, so imports run one way)."""

from __future__ import annotations

from genlab.models import (  # noqa: F401  (importing registers the families)
    cyclegan,
    diffusion,
    gan,
    latent_diffusion,
    pix2pix,
    vae,
)
from genlab.models.base import MODELS, GenerativeModel
from genlab.utils import GenlabError

# Names users reach for that are not separate trainings.
NOT_FAMILIES = {
    "ddim": "ddim is a sampler, not a separate training: train ddpm (or cddim for translation), then "
    "`genlab sample RUN --sampler ddim --steps 50`",
}


def get_model_class(name: str) -> type[GenerativeModel]:
    """The family registered as `name`; an unknown name is an error listing the valid ones."""
    if name in NOT_FAMILIES:
        raise GenlabError(NOT_FAMILIES[name])
    if name not in MODELS:
        raise GenlabError(f"unknown model {name!r} (valid: {', '.join(sorted(MODELS))})")
    return MODELS[name]
