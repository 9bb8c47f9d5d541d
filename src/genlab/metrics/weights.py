"""The optional pretrained networks (FID Inception, LPIPS): what each is for, where its files are looked for,
whether they are present and intact, and their download into genlab's cache (`genlab weights`).

>>> [network.name for network in OPTIONAL_NETWORKS.values()]
['inception', 'lpips-alex', 'lpips-vgg']
>>> [path.name for path in fetch_network("lpips-alex")]        # doctest: +SKIP
['alexnet-owt-7be5be79.pth', 'lpips-v0.1-alex.pth']
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genlab.cache import fetch_file, recorded_sha256, verify_file
from genlab.metrics.features import (
    INCEPTION_SOURCE,
    FeatureWeightsMissing,
    WeightSource,
    failure_reason,
    torch_hub_checkpoint,
    weights_cache_dir,
)
from genlab.metrics.perceptual import LPIPS_NETS, lpips_candidates
from genlab.utils import GenlabError


@dataclass(frozen=True)
class WeightFile:
    """One file of an optional network: its source, its part of the network and where else it is looked for."""

    source: WeightSource
    part: str  # "weights", "backbone", "linear heads"
    looked_for: str  # the places searched before genlab's cache, in words (env variables, options)
    candidates: Callable[[], list[Path]]  # those places as paths, in lookup order (evaluated at call time)

    def target(self) -> Path:
        """Where `genlab weights fetch` puts the file: `cache_dir()/weights/<filename>`."""
        return weights_cache_dir() / self.source.filename

    def present(self) -> Path | None:
        """The file the loaders would use without downloading: a candidate, genlab's cache, torch.hub's cache."""
        for path in [*self.candidates(), self.target(), torch_hub_checkpoint(self.source.filename)]:
            if path.is_file():
                return path
        return None

    def expected_checksum(self) -> str:
        """The SHA-256 the file is checked against: the prefix in its name, else the one recorded at download."""
        if self.source.sha256_prefix:
            return f"sha256 {self.source.sha256_prefix}..."
        recorded = recorded_sha256(self.target())
        return f"sha256 {recorded[:8]}... (recorded)" if recorded else "recorded at first download"


@dataclass(frozen=True)
class OptionalNetwork:
    """A pretrained network genlab can use but does not ship: its `genlab weights` name, purpose and files."""

    name: str
    title: str
    purpose: str
    files: tuple[WeightFile, ...]


def _env_file(variable: str) -> Callable[[], list[Path]]:
    return lambda: [Path(os.environ[variable]).expanduser()] if os.environ.get(variable) else []


def _lpips_network(net: str, title: str) -> OptionalNetwork:
    spec = LPIPS_NETS[net]
    weights_dir = "$GENLAB_LPIPS_WEIGHTS_DIR"
    return OptionalNetwork(
        f"lpips-{net}",
        title,
        "LPIPS perceptual distance (evaluate / score, paired metrics)",
        (
            WeightFile(spec.backbone, "backbone", f"{weights_dir}/{spec.backbone.filename}",
                       lambda: lpips_candidates(spec)[0]),
            WeightFile(spec.heads, "linear heads", f"{weights_dir}/{net}.pth, the lpips pip package",
                       lambda: lpips_candidates(spec)[1]),
        ),
    )


OPTIONAL_NETWORKS: dict[str, OptionalNetwork] = {
    "inception": OptionalNetwork(
        "inception",
        "FID InceptionV3 (pytorch-fid's TF-FID port)",
        "FID / KID / IS / precision-recall in the standard `inception` feature space",
        (WeightFile(INCEPTION_SOURCE, "weights", "--inception-weights, $GENLAB_INCEPTION_WEIGHTS",
                    _env_file("GENLAB_INCEPTION_WEIGHTS")),),
    ),
    "lpips-alex": _lpips_network("alex", "LPIPS v0.1, AlexNet backbone + linear heads"),
    "lpips-vgg": _lpips_network("vgg", "LPIPS v0.1, VGG16 backbone + linear heads"),
}


def optional_network(name: str) -> OptionalNetwork:
    """An optional network by its `genlab weights` name; an unknown name lists the valid ones."""
    if name not in OPTIONAL_NETWORKS:
        raise GenlabError(f"weights: unknown network {name!r} (choose from {', '.join(OPTIONAL_NETWORKS)})")
    return OPTIONAL_NETWORKS[name]


def fetch_network(name: str) -> list[Path]:
    """Download the files of a network into genlab's cache (verified; a file already there is only checked).

    Offline: FeatureWeightsMissing in one line naming the URL and the target path.
    """
    paths = []
    for file in optional_network(name).files:
        url, target = file.source.download_url(), file.target()
        try:
            fetch_file(url, target, expected_sha256=file.source.sha256_prefix, description=file.source.filename)
        except (OSError, GenlabError) as error:
            if target.exists():
                raise
            raise FeatureWeightsMissing(
                f"could not download {url} to {target} ({failure_reason(error)})"
            ) from error
        paths.append(target)
    return paths


def verify_present() -> list[tuple[str, Path, str | None]]:
    """(network name, file, problem or None) for every present weight file, checked against the SHA-256 prefix
    in its name and the checksum recorded at its download."""
    results = []
    for network in OPTIONAL_NETWORKS.values():
        for file in network.files:
            path = file.present()
            if path is None:
                continue
            try:
                verify_file(path, expected_sha256=file.source.sha256_prefix)
                results.append((network.name, path, None))
            except GenlabError as error:
                results.append((network.name, path, str(error)))
    return results


__all__ = ["OPTIONAL_NETWORKS", "OptionalNetwork", "WeightFile", "fetch_network", "optional_network", "verify_present"]
