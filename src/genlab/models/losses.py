"""Loss callables shared by the families: one GANLoss for every adversarial model, KL in closed form."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

GANMode = Literal["vanilla", "lsgan", "hinge"]


class GANLoss:
    """Adversarial loss on discriminator logits, for real or fake targets.

    vanilla: BCE with logits (pix2pix eq. 1); lsgan: least squares to 1/0 (the seed report's L2 variant,
    Mao et al. 2017); hinge: max(0, 1 -+ D) for D and -D for G.
    """

    def __init__(self, mode: GANMode = "vanilla") -> None:
        if mode not in ("vanilla", "lsgan", "hinge"):
            raise ValueError(f"unknown GAN loss {mode!r} (valid: vanilla, lsgan, hinge)")
        self.mode = mode

    def __call__(self, logits: torch.Tensor, real: bool, for_discriminator: bool = True) -> torch.Tensor:
        logits = logits.float()  # losses in fp32 even under autocast
        if self.mode == "vanilla":
            target = torch.ones_like(logits) if real else torch.zeros_like(logits)
            return F.binary_cross_entropy_with_logits(logits, target)
        if self.mode == "lsgan":
            return F.mse_loss(logits, torch.full_like(logits, 1.0 if real else 0.0))
        if not for_discriminator:  # hinge generator loss
            return -logits.mean()
        return F.relu(1.0 - logits).mean() if real else F.relu(1.0 + logits).mean()


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dims, averaged over the batch (Kingma & Welling, app. B)."""
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(dim=1).mean()
