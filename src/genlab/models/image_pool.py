"""The image history buffer of Shrivastava et al. 2017 (section 2.3), as CycleGAN uses it (section 4, pool of 50).

The discriminator is shown a mix of the newest fakes and fakes from earlier generators, which damps the
oscillation between G and D. The pool owns its random generator, so its choices are reproducible and its full
state (stored images and RNG state) is saved and restored with the training state: resume is exact.
"""

from __future__ import annotations

from typing import Any

import torch

from genlab.utils import make_generator


class ImagePool:
    """A buffer of up to `size` past images; `query(images)` returns a batch of the same shape.

    While the pool fills, each new image is stored and returned as is. Once full, each image is, with
    probability 1/2, swapped for a uniformly chosen stored one (which is returned; the new one takes its place),
    else returned as is. `size=0` turns the pool off (query returns its input).

    >>> pool = ImagePool(2, seed=0)
    >>> images = torch.zeros(2, 1, 4, 4)
    >>> torch.equal(pool.query(images), images)  # filling: the input comes back
    True
    """

    def __init__(self, size: int, seed: int) -> None:
        if size < 0:
            raise ValueError(f"image pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []  # each (C, H, W), detached, on the device of the queries
        self.generator = make_generator(seed)  # CPU generator: the same draws on every device

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) new images -> (B, C, H, W) images for the discriminator (detached)."""
        images = images.detach()
        if self.size == 0:
            return images
        returned = []
        for image in images:
            if len(self.images) < self.size:  # filling: keep it and show it
                self.images.append(image.clone())
                returned.append(image)
                continue
            if torch.rand((), generator=self.generator) < 0.5:  # show an older fake, keep the new one
                index = int(torch.randint(self.size, (), generator=self.generator))
                stored = self.images[index].to(image.device)
                self.images[index] = image.clone()
                returned.append(stored)
            else:
                returned.append(image)
        return torch.stack(returned)

    def state_dict(self) -> dict[str, Any]:
        """Stored images and the RNG state (tensors and lists only, so `weights_only` loading works)."""
        return {"images": [image.cpu() for image in self.images], "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        images = list(state["images"])
        if len(images) > self.size:
            raise ValueError(f"image pool state holds {len(images)} images, more than its size {self.size}")
        self.images = [image.clone() for image in images]
        self.generator.set_state(state["rng"])
