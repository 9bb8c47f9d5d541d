"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric") in pure torch.

d(x, y) = sum_l mean_hw( w_l . (f_l(x) / ||f_l(x)|| - f_l(y) / ||f_l(y)||)^2 )     (paper eq. 1)

f_l are the ReLU outputs of five layers of an ImageNet AlexNet or VGG16 (torchvision's weight files, layer
layout `features.N`), the norm is over channels, w_l are the learned non-negative 1x1 "linear" heads of the
lpips package's v0.1 weights (`lin0..lin4.model.1.weight`). Input images are in [-1, 1] and pass through
lpips' scaling layer first. No torchvision and no lpips import is needed: the standard files load directly.

>>> lpips = load_lpips("alex")                                        # doctest: +SKIP
>>> lpips_distance(fake, real, lpips)                                 # doctest: +SKIP
tensor([0.31, 0.27, ...])        # (N,), one distance per image pair
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from genlab.metrics.features import (
    FeatureWeightsMissing,
    WeightSource,
    freeze,
    load_weights_into,
    locate_weights,
    prepare_images,
    weights_hint,
)
from genlab.utils import GenlabError

# lpips' ScalingLayer: ImageNet mean and std expressed in [-1, 1] units ((mean - 0.5) / 0.5, std / 0.5).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10  # as lpips.normalize_tensor: x / (||x|| + eps)
LPIPS_HEADS_URL = "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1"


def _alexnet_layers() -> list[nn.Module]:
    """torchvision's `alexnet().features`, index for index (so `features.N.weight` keys match)."""
    return [
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),  # 0
        nn.ReLU(),  # 1 -> relu1
        nn.MaxPool2d(kernel_size=3, stride=2),  # 2
        nn.Conv2d(64, 192, kernel_size=5, padding=2),  # 3
        nn.ReLU(),  # 4 -> relu2
        nn.MaxPool2d(kernel_size=3, stride=2),  # 5
        nn.Conv2d(192, 384, kernel_size=3, padding=1),  # 6
        nn.ReLU(),  # 7 -> relu3
        nn.Conv2d(384, 256, kernel_size=3, padding=1),  # 8
        nn.ReLU(),  # 9 -> relu4
        nn.Conv2d(256, 256, kernel_size=3, padding=1),  # 10
        nn.ReLU(),  # 11 -> relu5
        nn.MaxPool2d(kernel_size=3, stride=2),  # 12 (never reached by LPIPS)
    ]


def _vgg16_layers() -> list[nn.Module]:
    """torchvision's `vgg16().features` (configuration D), index for index."""
    layers: list[nn.Module] = []
    in_channels = 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.ReLU()]
            in_channels = width
    return layers


@dataclass(frozen=True)
class LPIPSNetSpec:
    """One LPIPS backbone: its layers, which ReLU outputs are tapped, their widths, and its weight files."""

    name: str
    build_layers: Callable[[], list[nn.Module]]
    taps: tuple[int, ...]  # indices in `features` whose outputs are compared
    channels: tuple[int, ...]  # widths of those outputs = input widths of lin0..lin4
    min_size: int  # smallest H and W for which every tap has at least one pixel
    backbone: WeightSource
    heads: WeightSource


LPIPS_NETS: dict[str, LPIPSNetSpec] = {
    "alex": LPIPSNetSpec(
        name="alex",
        build_layers=_alexnet_layers,
        taps=(1, 4, 7, 9, 11),
        channels=(64, 192, 384, 256, 256),
        min_size=31,
        backbone=WeightSource(
            "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "7be5be79"
        ),
        heads=WeightSource("lpips-v0.1-alex.pth", f"{LPIPS_HEADS_URL}/alex.pth"),
    ),
    "vgg": LPIPSNetSpec(
        name="vgg",
        build_layers=_vgg16_layers,
        taps=(3, 8, 15, 22, 29),  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
        channels=(64, 128, 256, 512, 512),
        min_size=16,
        backbone=WeightSource(
            "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af"
        ),
        heads=WeightSource("lpips-v0.1-vgg.pth", f"{LPIPS_HEADS_URL}/vgg.pth"),
    ),
}


def lpips_net_spec(net: str) -> LPIPSNetSpec:
    """The spec of an LPIPS backbone by name ("alex" or "vgg"; "vgg16" is accepted as in lpips)."""
    key = "vgg" if net == "vgg16" else net
    if key not in LPIPS_NETS:
        raise GenlabError(f"LPIPS: unknown network {net!r} (choose from {', '.join(sorted(LPIPS_NETS))})")
    return LPIPS_NETS[key]


class TappedFeatures(nn.Module):
    """A torchvision-layout `features` stack that returns the outputs of the layers at `taps`."""

    def __init__(self, layers: list[nn.Module], taps: tuple[int, ...]) -> None:
        super().__init__()
        self.features = nn.Sequential(*layers)
        self.taps = taps

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for index, layer in enumerate(self.features[: self.taps[-1] + 1]):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)  # (N, C_l, H_l, W_l)
        return outputs


class LinearHead(nn.Module):
    """A 1x1 convolution C -> 1 without bias; `model.1` so the keys match lpips' files (`model.0` was Dropout).

    The Dropout is replaced by Identity: it only mattered while the heads were trained, and it keeps LPIPS
    deterministic even inside a module left in train mode.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LPIPSHeads(nn.Module):
    """lin0..lin4, laid out as in lpips' `weights/v0.1/{alex,vgg}.pth`."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        for index, width in enumerate(channels):
            self.add_module(f"lin{index}", LinearHead(width))

    def __getitem__(self, index: int) -> LinearHead:
        return getattr(self, f"lin{index}")


def normalize_channels(features: Tensor) -> Tensor:
    """Unit-normalise each pixel's feature vector over channels: (N, C, H, W) -> same shape."""
    norm = features.pow(2).sum(dim=1, keepdim=True).sqrt()  # (N, 1, H, W)
    return features / (norm + NORM_EPS)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance network: `lpips(a, b)` -> (N,) for image batches in [-1, 1].

    State: `net.features.*` (torchvision backbone layout) and `heads.lin0..lin4.model.1.weight` (lpips layout).
    Gradients flow to the inputs, so it can serve as a perceptual loss; use `load_lpips` for the real weights.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        self.spec = lpips_net_spec(net)
        self.name = f"lpips-{self.spec.name}"
        self.net = TappedFeatures(self.spec.build_layers(), self.spec.taps)
        self.heads = LPIPSHeads(self.spec.channels)
        # Constants, not weights: kept out of the state dict so it matches the standard files exactly.
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def _prepare(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        a, b = prepare_images(a), prepare_images(b)
        if a.shape != b.shape:
            raise GenlabError(f"LPIPS: image batches differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        if min(a.shape[-2:]) < self.spec.min_size:
            raise GenlabError(
                f"LPIPS-{self.spec.name}: images of {a.shape[-2]}x{a.shape[-1]} are too small "
                f"(need at least {self.spec.min_size}x{self.spec.min_size}; upsample them first)"
            )
        return a.to(self.shift.device), b.to(self.shift.device)

    def layer_distances(self, a: Tensor, b: Tensor) -> list[Tensor]:
        """The five per-layer terms of eq. 1, each (N,); their sum is the LPIPS distance."""
        a, b = self._prepare(a, b)
        features_a = self.net((a - self.shift) / self.scale)
        features_b = self.net((b - self.shift) / self.scale)
        distances = []
        for index, (fa, fb) in enumerate(zip(features_a, features_b, strict=True)):
            squared = (normalize_channels(fa) - normalize_channels(fb)).pow(2)  # (N, C_l, H_l, W_l)
            distances.append(self.heads[index](squared).mean(dim=(1, 2, 3)))  # (N,)
        return distances

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.stack(self.layer_distances(a, b)).sum(dim=0)  # (N,)


def _lpips_package_heads(net: str) -> Path | None:
    """`lpips/weights/v0.1/<net>.pth` inside an installed lpips package, found without importing it.

    importlib.util.find_spec locates a top-level package without running its __init__ (which would import
    torchvision).
    """
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "weights" / "v0.1" / f"{net}.pth"
        if candidate.is_file():
            return candidate
    return None


def lpips_how_to(spec: LPIPSNetSpec, source: WeightSource) -> str:
    """The last line of the message telling a user how to supply one LPIPS weight file of `spec`."""
    if source is spec.heads:
        also = (f"$GENLAB_LPIPS_WEIGHTS_DIR/{spec.name}.pth, the lpips pip package "
                f"(lpips/weights/v0.1/{spec.name}.pth) or load_lpips(heads_path=)")
    else:
        also = f"$GENLAB_LPIPS_WEIGHTS_DIR/{source.filename} or load_lpips(backbone_path=)"
    return weights_hint(f"lpips-{spec.name}", source, also)


def lpips_candidates(spec: LPIPSNetSpec) -> tuple[list[Path], list[Path]]:
    """Where the backbone and the heads of `spec` are looked for before genlab's cache (the weights directory
    `$GENLAB_LPIPS_WEIGHTS_DIR`, an installed lpips package's heads)."""
    directory = os.environ.get("GENLAB_LPIPS_WEIGHTS_DIR")
    backbone = [Path(directory) / spec.backbone.filename] if directory else []
    heads = [Path(directory) / f"{spec.name}.pth", Path(directory) / spec.heads.filename] if directory else []
    package_heads = _lpips_package_heads(spec.name)
    if package_heads is not None:
        heads.append(package_heads)
    return backbone, heads


def load_lpips(
    net: str = "alex",
    backbone_path: str | os.PathLike | None = None,
    heads_path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
) -> LPIPS:
    """LPIPS v0.1 with the standard weights, frozen, in eval mode, on `device`.

    Backbone (torchvision's `alexnet-owt-7be5be79.pth` / `vgg16-397923af.pth`; classifier keys ignored):
    `backbone_path`, `$GENLAB_LPIPS_WEIGHTS_DIR/<file>`, genlab's cache, torch.hub's cache, else a download
    from download.pytorch.org checked against the SHA-256 prefix in the name. Heads: `heads_path`,
    `$GENLAB_LPIPS_WEIGHTS_DIR/<net>.pth`, an installed lpips package's copy, genlab's cache
    (`lpips-v0.1-<net>.pth`), else a download from the lpips repository. Offline without them:
    FeatureWeightsMissing saying how to supply them. `$GENLAB_WEIGHTS_MIRROR` replaces the download host.

    >>> lpips = load_lpips("vgg", device="cuda")       # doctest: +SKIP
    """
    spec = lpips_net_spec(net)
    backbone_candidates, heads_candidates = lpips_candidates(spec)
    model = LPIPS(spec.name)
    backbone_how_to = lpips_how_to(spec, spec.backbone)
    backbone_file = locate_weights(spec.backbone, backbone_path, backbone_how_to, candidates=backbone_candidates)
    load_weights_into(model.net, backbone_file, ignore_prefixes=("classifier.",))
    heads_file = locate_weights(spec.heads, heads_path, lpips_how_to(spec, spec.heads), candidates=heads_candidates)
    load_weights_into(model.heads, heads_file)
    return freeze(model).to(device)


def lpips_distance(a: Tensor, b: Tensor, net: LPIPS) -> Tensor:
    """Per-image LPIPS distances (N,) between two batches in [-1, 1] (same shape), with a loaded `LPIPS`.

    Differentiable with respect to the images (usable as a loss); wrap in torch.no_grad() to evaluate.
    """
    return net(a, b)


class LPIPSMetric:
    """Mean LPIPS over all pairs seen, torchmetrics-style: `update(a, b)`, `compute()`, `reset()`.

    Accumulates a float64 sum and a count, so memory does not grow with the number of images.

    >>> metric = LPIPSMetric(load_lpips("alex"))        # doctest: +SKIP
    >>> for fake, real in pairs: metric.update(fake, real)            # doctest: +SKIP
    >>> metric.compute()                                # doctest: +SKIP
    """

    def __init__(self, net: LPIPS) -> None:
        self.net = net
        self.reset()

    def reset(self) -> None:
        """Forget every pair seen so far."""
        self.total = torch.zeros((), dtype=torch.float64)
        self.count = 0

    def update(self, a: Tensor, b: Tensor) -> None:
        """Add the distances of a batch of pairs (N, C, H, W) each, in [-1, 1]."""
        with torch.no_grad():
            distances = lpips_distance(a, b, self.net)  # (N,)
        self.total += distances.double().sum().cpu()
        self.count += distances.numel()

    def compute(self) -> Tensor:
        """Mean LPIPS distance (float64 scalar) over all pairs since the last reset."""
        if self.count == 0:
            raise GenlabError("LPIPS: compute() called before any update()")
        return self.total / self.count


__all__ = [
    "LPIPS",
    "LPIPSMetric",
    "LPIPS_NETS",
    "FeatureWeightsMissing",
    "load_lpips",
    "lpips_distance",
    "lpips_net_spec",
    "normalize_channels",
]
