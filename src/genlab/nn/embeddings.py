"""Embeddings for diffusion networks: sinusoidal timestep and noise-level embeddings, class labels with a null class.

Example:
    >>> timestep_embedding(torch.tensor([0, 999]), 64).shape
    torch.Size([2, 64])
    >>> seed_noise_embedding(torch.tensor([0.1, 0.9])).shape
    torch.Size([2, 32])
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding (Vaswani et al. 2017, sec. 3.5; DDPM appendix B) of t (B,) -> (B, dim).

    Frequencies 1 / max_period^(i / half) for i < half = dim // 2; the output is [cos(t f), sin(t f)], zero-padded
    by one column when `dim` is odd. `t` may be integer steps or floats.
    """
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    arguments = t.float().reshape(-1, 1) * frequencies.reshape(1, -1)  # (B, half)
    embedding = torch.cat([torch.cos(arguments), torch.sin(arguments)], dim=1)  # (B, 2 * half)
    if dim % 2:
        embedding = nn.functional.pad(embedding, (0, 1))
    return embedding


def seed_noise_embedding(
    noise_level: torch.Tensor,
    dim: int = 32,
    min_frequency: float = 1.0,
    max_frequency: float = 1000.0,
) -> torch.Tensor:
    """The seed's sinusoidal embedding (seed 000, table 4 row 1-2-1 and eq. 14-15; Keras DDIM) of (B,) -> (B, dim).

    dim // 2 = 16 frequencies f_i spaced geometrically between `min_frequency` and `max_frequency`; the output is
    [sin(2 pi f_i x), cos(2 pi f_i x)]. The input x is a noise level in [0, 1]: the Keras example feeds the noise
    variance noise_rate^2, the seed's table calls it the diffusion time. Eq. 14 of the seed writes the exponents
    as 0, 0.2, ..., 3 (frequencies 1 to e^3 ~ 20); pass max_frequency=math.exp(3) for that reading. The default
    1 to 1000 is the Keras example the seed follows.
    """
    count = dim // 2
    exponents = torch.linspace(
        math.log(min_frequency), math.log(max_frequency), count, device=noise_level.device, dtype=torch.float32
    )
    angular_speeds = 2.0 * math.pi * torch.exp(exponents)  # (count,)
    arguments = noise_level.float().reshape(-1, 1) * angular_speeds.reshape(1, -1)  # (B, count)
    return torch.cat([torch.sin(arguments), torch.cos(arguments)], dim=1)  # (B, 2 * count)


class LabelEmbedding(nn.Module):
    """A learned embedding of class labels 0..num_classes-1 plus one extra "null" class for classifier-free guidance.

    The null class, index `num_classes`, is the unconditional input: labels are replaced by it with some
    probability in training (`drop_labels`) and it is the `null_cond` when sampling with guidance
    (Ho & Salimans 2022, sec. 3.2).
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"LabelEmbedding needs at least one class, got {num_classes}")
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, dim)

    @property
    def null_index(self) -> int:
        """The label that means "no class"."""
        return self.num_classes

    def null_labels(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(batch,) int64 labels all equal to the null class."""
        return torch.full((batch,), self.null_index, dtype=torch.long, device=device)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """labels (B,) int64 in [0, num_classes] -> (B, dim)."""
        if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"class labels must be an integer tensor, got {labels.dtype}")
        # Checked off-GPU only: the check syncs the device, and CUDA reports bad indices itself.
        if not labels.is_cuda and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.null_index):
            raise ValueError(f"class labels must lie in [0, {self.num_classes}] ({self.null_index} = null class)")
        return self.embedding(labels.long())


def drop_labels(
    labels: torch.Tensor, null_index: int, probability: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replace each label by `null_index` with `probability` (classifier-free guidance training, label dropout)."""
    if probability <= 0:
        return labels
    device = generator.device if generator is not None else labels.device
    drop = (torch.rand(labels.shape, generator=generator, device=device) < probability).to(labels.device)
    return torch.where(drop, torch.full_like(labels, null_index), labels)
