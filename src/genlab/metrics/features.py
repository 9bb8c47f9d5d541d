"""Feature networks for FID / KID / IS: the FID InceptionV3 in pure torch, its weight loading, a common protocol.

genlab's core depends on torch alone, so the TF-FID InceptionV3 (the network behind every published FID) is
written here with parameter and buffer names identical to the standard weight file
`pt_inception-2015-12-05-6726825d.pth` of pytorch-fid: the file loads with `torch.load(weights_only=True)` and
`load_state_dict(strict=True)`, and no torchvision is needed.

Any network that follows `FeatureExtractor` (Inception here, a domain classifier trained by genlab elsewhere)
can feed the FID / KID / IS code:

>>> inception = load_inception("pt_inception-2015-12-05-6726825d.pth")   # doctest: +SKIP
>>> out = inception(images)             # images (N, 3 or 1, H, W) in [-1, 1]      # doctest: +SKIP
>>> out["features"].shape, out["probs"].shape                                      # doctest: +SKIP
(torch.Size([N, 2048]), torch.Size([N, 1008]))
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.cache import cache_dir, fetch_file, record_sha256, recorded_sha256
from genlab.utils import GenlabError, uint8_to_signed

# pytorch-fid's port of the TF graph `inception-2015-12-05.tgz`, the network of the original FID code.
INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILENAME}"
INCEPTION_INPUT_SIZE = 299
INCEPTION_NUM_CLASSES = 1008  # the 2015 TF graph has 1008 outputs: 1000 ImageNet classes + 8 unused
INCEPTION_DIMS = 2048


class FeatureWeightsMissing(GenlabError):
    """The weights of a standard feature network are neither on disk nor downloadable (offline)."""


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the FID / KID / IS code needs from a feature network.

    `__call__` takes float images in [-1, 1], (N, C, H, W), and returns at least `features` (N, dims); a
    classifier also returns `probs` (N, K), class probabilities summing to one (needed for IS).
    """

    name: str
    dims: int

    def __call__(self, images: Tensor) -> dict[str, Tensor]: ...


# ----------------------------------------------------------------------------------------------------------
# The network (layout of torchvision's Inception3 with pytorch-fid's FID patches; no auxiliary classifier)
# ----------------------------------------------------------------------------------------------------------

PoolMode = Literal["avg", "max"]


def _branch_pool(x: Tensor, mode: PoolMode) -> Tensor:
    """The 3x3 stride-1 pooling branch of the Inception blocks, as the TF graph computes it."""
    if mode == "max":
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    # TF's average pool divides by the number of real (unpadded) pixels, hence count_include_pad=False.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, the TF graph's value) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_branch_pool(x, "avg"))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (Mixed_6a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3(x), branch3x3dbl, branch_pool], dim=1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b..6e)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        branch_pool = self.branch_pool(_branch_pool(x, "avg"))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8 (Mixed_7a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], dim=1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 convolutions (Mixed_7b, Mixed_7c).

    `pool` is "avg" for Mixed_7b and "max" for Mixed_7c: the TF FID graph max-pools in its last block (pytorch-fid's
    FIDInceptionE_2; most likely a bug of that graph, but FID values are only comparable if we copy it).
    """

    def __init__(self, in_channels: int, pool: PoolMode) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], dim=1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], dim=1)
        branch_pool = self.branch_pool(_branch_pool(x, self.pool))
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, branch_pool], dim=1)


class FIDInceptionV3(nn.Module):
    """The TF-FID InceptionV3 (pytorch-fid's `fid_inception_v3`), 23,850,960 parameters.

    Input: float images in [-1, 1], (N, 3, H, W) or (N, 1, H, W) (grey is repeated to RGB), resized to 299x299
    bilinearly with align_corners=False as pytorch-fid does. Output dict:

    - `features` (N, 2048): the pool3 features (global average pool of Mixed_7c; pytorch-fid's default block
      3), used by FID and KID.
    - `logits` (N, 1008): pool3 @ fc.weight.T *without* the fc bias, and `probs` = softmax(logits) over all
      1008 outputs. This is what the original IS code (openai/improved-gan) reads from the TF graph (the
      `softmax/logits/MatMul` op, before the bias add) and what torch-fidelity and torchmetrics use
      (`logits_unbiased`), so IS values are comparable with theirs. Classes 1000..1007 are unused by ImageNet
      and get near-zero probability with the real weights.
    """

    name = "inception-v3-fid"
    dims = INCEPTION_DIMS
    num_classes = INCEPTION_NUM_CLASSES

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(INCEPTION_DIMS, INCEPTION_NUM_CLASSES)

    def pool3(self, x: Tensor) -> Tensor:
        """(N, 3, 299, 299) in [-1, 1] -> (N, 2048) pool3 features."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (N, 288, 35, 35)
        x = self.Mixed_6a(x)  # (N, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (N, 768, 17, 17)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (N, 2048, 8, 8)
        return x.mean(dim=(2, 3))  # (N, 2048)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = prepare_images(images, INCEPTION_INPUT_SIZE).to(self.fc.weight.dtype)
        features = self.pool3(x)  # (N, 2048)
        logits = features @ self.fc.weight.T  # (N, 1008), bias left out on purpose (see the class docstring)
        return {"features": features, "logits": logits, "probs": logits.softmax(dim=1)}


def prepare_images(images: Tensor, size: int | None = None) -> Tensor:
    """Check a batch of images in [-1, 1] and bring it to 3 channels (and to size x size, bilinearly).

    uint8 input is converted from [0, 255]; (C, H, W) is taken as a batch of one.
    """
    if images.dtype == torch.uint8:
        images = uint8_to_signed(images)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise GenlabError(f"feature network: expected images (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    images = images.float()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)  # (N, 3, H, W) grey as RGB
    if size is not None and images.shape[-2:] != (size, size):
        # pytorch-fid resizes [0, 1] images before mapping to [-1, 1]; bilinear weights sum to one, so resizing
        # the [-1, 1] images gives the same result.
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images


# ----------------------------------------------------------------------------------------------------------
# Weight files: where to find them, how to check them
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightSource:
    """A standard weight file: its file name, its official URL and the first hex digits of its SHA-256."""

    filename: str
    url: str
    sha256_prefix: str | None = None
    url_env: str | None = None  # environment variable that overrides the URL (a mirror, or tests)

    def download_url(self) -> str:
        """The URL to download from: `$url_env`, else `$GENLAB_WEIGHTS_MIRROR/filename`, else the official URL."""
        if self.url_env and os.environ.get(self.url_env):
            return os.environ[self.url_env]
        mirror = os.environ.get("GENLAB_WEIGHTS_MIRROR")
        if mirror:
            return f"{mirror.rstrip('/')}/{self.filename}"
        return self.url


INCEPTION_SOURCE = WeightSource(INCEPTION_FILENAME, INCEPTION_URL, "6726825d", url_env="GENLAB_INCEPTION_URL")


def weights_cache_dir() -> Path:
    """Where genlab keeps downloaded feature-network weights: `cache_dir()/weights`."""
    return cache_dir() / "weights"


def torch_hub_checkpoint(filename: str) -> Path:
    """Where torch.hub (pytorch-fid, torchvision, lpips) would have cached `filename`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def failure_reason(error: BaseException) -> str:
    """A download failure in a few words: the network error behind a fetch_file GenlabError, else the error."""
    cause = error.__cause__ if error.__cause__ is not None else error
    if isinstance(cause, urllib.error.HTTPError):
        return f"HTTP {cause.code} {cause.reason}"
    return str(getattr(cause, "reason", None) or cause)


def weights_hint(name: str, source: WeightSource, also: str) -> str:
    """The last line of a missing-weights message: the official file, where else it may be named, what to do."""
    target = weights_cache_dir() / source.filename
    return (
        f"{source.filename} ({source.url}) may also be given by {also}: run `genlab weights fetch {name}` "
        f"or put the file at {target}"
    )


def download_weights(source: WeightSource, destination: Path, how_to: str) -> Path:
    """Download `source` to `destination` and check its SHA-256 prefix; offline -> FeatureWeightsMissing: one line
    saying what failed, then `how_to` (see weights_hint)."""
    url = source.download_url()
    try:
        # The hub naming convention puts the first hex digits of the SHA-256 in the file name: anything else (an
        # HTML page from a captive portal, another file) is rejected before it is recorded or kept.
        fetch_file(url, destination, expected_sha256=source.sha256_prefix, description=source.filename)
    except (OSError, GenlabError) as error:
        if isinstance(error, GenlabError) and destination.exists():
            raise
        raise FeatureWeightsMissing(
            f"{source.filename}: download of {url} failed ({failure_reason(error)})\n{how_to}"
        ) from error
    return destination


def locate_weights(
    source: WeightSource,
    explicit: str | os.PathLike | None,
    how_to: str,
    env_file: str | None = None,
    candidates: Iterable[Path] = (),
) -> Path:
    """Find a weight file, else download it into genlab's cache.

    Order: the explicit path, the file named by `$env_file`, `candidates` (in order), genlab's cache
    (`cache_dir()/weights/<filename>`), torch.hub's cache, then a download into genlab's cache. An explicit or
    environment path that is not a file is an error, never silently replaced by a download.
    """
    environment = os.environ.get(env_file) if env_file else None
    for given, origin in ((explicit, "the given path"), (environment, f"${env_file}")):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise FeatureWeightsMissing(f"{source.filename}: {origin} {str(path)!r} is not a file\n{how_to}")
            return path
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    cached = weights_cache_dir() / source.filename
    if cached.is_file():
        # fetch_file re-checks a cached file against the SHA-256 recorded at its download (bit rot, replacement).
        return fetch_file(source.download_url(), cached, description=source.filename)
    hub = torch_hub_checkpoint(source.filename)
    if hub.is_file():
        return hub
    return download_weights(source, cached, how_to)


def read_state_dict(path: Path) -> Mapping[str, Tensor]:
    """torch.load a state dict safely (weights_only) on the CPU; unreadable files raise GenlabError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated download, an HTML error page, a pickle with code...
        raise GenlabError(f"{path}: not a readable torch weight file ({type(error).__name__}: {error})") from error
    if not isinstance(state, Mapping) or not all(isinstance(value, Tensor) for value in state.values()):
        raise GenlabError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    return state


def check_state_dict(
    expected: Mapping[str, Tensor], state: Mapping[str, Tensor], path: Path, ignore_prefixes: tuple[str, ...] = ()
) -> dict[str, Tensor]:
    """Match a loaded state dict to a module's: the first missing, unexpected or mis-shaped key is an error.

    Keys starting with one of `ignore_prefixes` are dropped (e.g. torchvision's `classifier.` for a backbone).
    BatchNorm `num_batches_tracked` counters may be absent (older files) and are then taken from `expected`.
    """
    state = {key: value for key, value in state.items() if not key.startswith(ignore_prefixes)}
    for key, reference in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                state[key] = reference.clone()
                continue
            raise GenlabError(f"{path}: missing key {key!r} (is this the right weight file?)")
        if state[key].shape != reference.shape:
            raise GenlabError(
                f"{path}: key {key!r} has shape {tuple(state[key].shape)}, expected {tuple(reference.shape)}"
            )
    for key in state:
        if key not in expected:
            raise GenlabError(f"{path}: unexpected key {key!r} (is this the right weight file?)")
    return state


def load_weights_into(module: nn.Module, path: Path, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load a standard weight file into `module`, strictly, after checking keys and shapes."""
    state = check_state_dict(module.state_dict(), read_state_dict(path), path, ignore_prefixes)
    module.load_state_dict(state, strict=True)
    # A file put into genlab's cache by hand is recorded once it has proved usable; later uses then catch a
    # changed or damaged file (downloads are recorded by fetch_file itself).
    cache = weights_cache_dir().resolve()
    if Path(path).resolve().is_relative_to(cache) and recorded_sha256(path) is None:
        record_sha256(path)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients: a fixed measuring instrument."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def inception_how_to() -> str:
    """The last line of the message telling a user how to supply the FID Inception weights."""
    return weights_hint("inception", INCEPTION_SOURCE, "--inception-weights PATH or $GENLAB_INCEPTION_WEIGHTS")


def load_inception(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> FIDInceptionV3:
    """The FID InceptionV3 with the standard weights, frozen, in eval mode, on `device`.

    Lookup order: `path`, `$GENLAB_INCEPTION_WEIGHTS`, `cache_dir()/weights/pt_inception-2015-12-05-6726825d.pth`,
    torch.hub's cache (where pytorch-fid puts it), else a download from the pytorch-fid release (URL overridable
    by `$GENLAB_INCEPTION_URL`) into genlab's cache, checked against the SHA-256 prefix in its name. Offline
    without the file: FeatureWeightsMissing saying how to supply it. A file of another layout: GenlabError
    naming the file and the first bad key.

    >>> inception = load_inception(device="cuda")     # doctest: +SKIP
    """
    weights = locate_weights(INCEPTION_SOURCE, path, inception_how_to(), env_file="GENLAB_INCEPTION_WEIGHTS")
    model = FIDInceptionV3()
    load_weights_into(model, weights)
    return freeze(model).to(device)


# ----------------------------------------------------------------------------------------------------------
# Batched extraction
# ----------------------------------------------------------------------------------------------------------


def iter_features(
    extractor: FeatureExtractor, image_batches: Iterable[Tensor], device: torch.device | str = "cpu"
) -> Iterator[dict[str, Tensor]]:
    """Run `extractor` over batches of images ([-1, 1] float or uint8), yielding each batch's outputs on the CPU.

    Streaming: one batch is in flight at a time, so running statistics (FID sums) never hold all images.
    """
    with torch.no_grad():
        for images in image_batches:
            if images.dtype == torch.uint8:
                images = uint8_to_signed(images)
            outputs = extractor(images.to(device))
            yield {key: value.detach().float().cpu() for key, value in outputs.items()}


def extract_features(
    extractor: FeatureExtractor, image_batches: Iterable[Tensor], device: torch.device | str = "cpu"
) -> dict[str, Tensor]:
    """All outputs of `extractor` over `image_batches`, concatenated: e.g. `features` (N, D), `probs` (N, K).

    >>> out = extract_features(load_inception(), split_batches, device="cuda")   # doctest: +SKIP
    """
    collected: dict[str, list[Tensor]] = {}
    for outputs in iter_features(extractor, image_batches, device):
        for key, value in outputs.items():
            collected.setdefault(key, []).append(value)
    if not collected:
        raise GenlabError(f"{extractor.name}: no images to extract features from")
    return {key: torch.cat(values) for key, values in collected.items()}


__all__ = [
    "FIDInceptionV3",
    "FeatureExtractor",
    "FeatureWeightsMissing",
    "INCEPTION_FILENAME",
    "INCEPTION_SOURCE",
    "INCEPTION_URL",
    "WeightSource",
    "extract_features",
    "freeze",
    "iter_features",
    "load_inception",
    "load_weights_into",
    "locate_weights",
    "prepare_images",
]
