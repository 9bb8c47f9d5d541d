"""Domain networks: a classifier or a segmenter trained by genlab on a task's real training split only.

They work offline and give domain FID/KID (penultimate features), IS-style scores (class probabilities) and
semantic scores (FCN-score of generated photos against their input label maps). Each is cached by task,
size and seed, with its own held-out accuracy on the real test split recorded beside it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from genlab.config import DataConfig
from genlab.data.tasks import Task, get_task
from genlab.metrics.semantic import classification_accuracy, confusion_matrix, segmentation_scores
from genlab.results import FeatureNetwork
from genlab.utils import (
    GenlabError,
    atomic_path,
    atomic_write_text,
    derive_seed,
    make_generator,
    seed_everything,
    uint8_to_signed,
)

DOMAIN_VERSION = 1  # bump when the architectures or recipes change: old caches are then ignored
DomainKind = Literal["classifier", "segmenter"]


def _conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(),
        nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(),
    )


class DomainClassifier(nn.Module):
    """A small CNN classifier; its 128-d pooled penultimate layer is the feature space."""

    def __init__(self, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_block(channels, width),
            nn.MaxPool2d(2),
            _conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(4 * width, num_classes))
        self.feature_dims = 4 * width

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(images)  # (B, 4*width)
        return features, self.head(features)  # features, logits (B, K)


class DomainSegmenter(nn.Module):
    """A small U-Net segmenter (photo -> per-pixel class logits); its pooled bottleneck is the feature space."""

    def __init__(self, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.down1 = _conv_block(channels, width)
        self.down2 = _conv_block(width, 2 * width)
        self.bottom = _conv_block(2 * width, 4 * width)
        self.up2 = _conv_block(4 * width + 2 * width, 2 * width)
        self.up1 = _conv_block(2 * width + width, width)
        self.classify = nn.Conv2d(width, num_classes, 1)
        self.feature_dims = 4 * width

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip1 = self.down1(images)  # (B, w, H, W)
        skip2 = self.down2(F.max_pool2d(skip1, 2))  # (B, 2w, H/2, W/2)
        bottom = self.bottom(F.max_pool2d(skip2, 2))  # (B, 4w, H/4, W/4)
        up = F.interpolate(bottom, size=skip2.shape[-2:], mode="bilinear", align_corners=False)
        up = self.up2(torch.cat([up, skip2], dim=1))
        up = F.interpolate(up, size=skip1.shape[-2:], mode="bilinear", align_corners=False)
        up = self.up1(torch.cat([up, skip1], dim=1))
        return bottom.mean(dim=(2, 3)), self.classify(up)  # features (B, 4w), logits (B, K, H, W)


@dataclass
class DomainNetwork:
    """A trained domain network with its provenance; callable as a feature extractor."""

    kind: DomainKind
    task: str
    image_size: int
    seed: int
    net: nn.Module
    test_accuracy: float  # per-image accuracy (classifier) or per-pixel accuracy (segmenter) on real test data
    test_scores: dict[str, float]

    @property
    def name(self) -> str:
        return f"domain:{self.task}"

    @property
    def dims(self) -> int:
        return self.net.feature_dims

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, C, H, W) in [-1, 1] -> features (B, D), probs (B, K) (segmenter: mean pixel probs)."""
        self.net.eval()
        device = next(self.net.parameters()).device
        features, logits = self.net(_fit(images.to(device), self.image_size))
        probs = logits.softmax(dim=1)
        if self.kind == "segmenter":
            probs = probs.mean(dim=(2, 3))
        return {"features": features.double(), "probs": probs.double(), "logits": logits}

    @property
    def num_classes(self) -> int:
        return self.net.classify.out_channels if self.kind == "segmenter" else self.net.head[-1].out_features

    def classes_of(self, label_maps: torch.Tensor) -> torch.Tensor:
        """Per-pixel classes (B, H, W) of uint8 label maps drawn in the task's palette (the FCN-score's truth)."""
        if self.kind != "segmenter":
            raise GenlabError(f"{self.name} is a classifier; it reads no label maps")
        from genlab.data.facades_synth import label_map_to_classes

        return label_map_to_classes(label_maps)

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel class indices (B, H, W) of photos in [-1, 1]."""
        if self.kind != "segmenter":
            raise GenlabError(f"{self.name} is a classifier, not a segmenter")
        return self(images)["logits"].argmax(dim=1)

    def feature_network(self) -> FeatureNetwork:
        """How scores measured with this network name it: its name and its held-out accuracy on real data."""
        return FeatureNetwork(
            f"{self.name} {self.kind} @{self.image_size}px", self.test_accuracy, details=self.provenance()
        )

    def provenance(self) -> dict[str, object]:
        """What to record next to every score computed with this network."""
        return {
            "network": self.name,
            "kind": self.kind,
            "image_size": self.image_size,
            "seed": self.seed,
            "test_accuracy": self.test_accuracy,
            **{f"test_{k}": v for k, v in self.test_scores.items()},
        }


def _fit(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)


# --- which network a task gets ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DomainRecipe:
    kind: DomainKind
    data_task: str  # the task whose real training split trains the network
    image_field: str  # the real images it sees
    steps: int
    batch_size: int
    learning_rate: float
    width: int  # sized so training takes a few minutes on 2 CPU cores


RECIPES: dict[str, DomainRecipe] = {
    "fashion-mnist": DomainRecipe("classifier", "fashion-mnist", "image", 1500, 64, 2e-3, 32),
    "edges2fashion": DomainRecipe("classifier", "fashion-mnist", "image", 1500, 64, 2e-3, 32),
    "facades-synth": DomainRecipe("segmenter", "facades-synth", "target", 1000, 16, 2e-3, 16),
}


def domain_network(
    task: str,
    image_size: int,
    seed: int = 0,
    data_root: str | None = None,
    device: str | torch.device = "cpu",
    cache: Path | None = None,
    progress: bool = True,
) -> DomainNetwork:
    """The task's domain network: the weights shipped with genlab for this recipe and size, else the cache,
    else trained on the real training split (deterministic given the recipe and seed) and cached."""
    from genlab.cache import cache_dir

    if task not in RECIPES:
        raise GenlabError(f"no domain network for task {task!r} (available for: {', '.join(RECIPES)})")
    recipe = RECIPES[task]
    stem = weights_stem(recipe, image_size, seed)
    path = (cache or cache_dir() / "domain") / f"{stem}.pt"
    data = get_task(DataConfig(task=recipe.data_task, image_size=image_size, data_root=data_root))
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(seed)  # the initial weights too: a judge trained anywhere is the same network
        net = _new_net(recipe, data)
    shipped = shipped_weights(recipe, stem)
    stored = None
    if shipped is not None or path.is_file():
        stored = torch.load(shipped or path, map_location="cpu", weights_only=True)
        # A cached network trained by another recipe under the same name (an older genlab's, a test's shortened
        # one) is stale: train this recipe's instead of loading weights of another width or training length.
        if shipped is None and stored.get("recipe") != dataclasses.asdict(recipe):
            stored = None
    if stored is not None:
        net.load_state_dict(stored["state"])
        scores = stored["test_scores"]
    else:
        _train(net, recipe, data, seed, progress)
        scores = _test_scores(net, recipe, data)
        with atomic_path(path) as temporary:
            torch.save({"state": net.state_dict(), "test_scores": scores, "recipe": dataclasses.asdict(recipe)},
                       temporary)
    net.to(device).eval()
    headline = scores["accuracy"] if recipe.kind == "classifier" else scores["pixel_accuracy"]
    return DomainNetwork(recipe.kind, task, image_size, seed, net, headline, scores)


SHIPPED_DIR = Path(__file__).parent / "weights"  # small judges shipped in the package, with SHA-256 sums
SHIPPED_INDEX = "weights.json"


def weights_stem(recipe: DomainRecipe, image_size: int, seed: int) -> str:
    return f"{recipe.data_task}-{recipe.kind}-{image_size}px-seed{seed}-v{DOMAIN_VERSION}"


def shipped_weights(recipe: DomainRecipe, stem: str) -> Path | None:
    """The packaged weights file for this network when genlab ships one trained with exactly this recipe;
    a file whose SHA-256 differs from its record is an error (a damaged install), never silently used."""
    import json

    index_path = SHIPPED_DIR / SHIPPED_INDEX
    if not index_path.is_file():
        return None
    entry = json.loads(index_path.read_text()).get(stem)
    if entry is None or entry["recipe"] != dataclasses.asdict(recipe):
        return None
    path = SHIPPED_DIR / f"{stem}.pt"
    from genlab.cache import sha256_of

    if not path.is_file() or sha256_of(path) != entry["sha256"]:
        raise GenlabError(f"{path}: the shipped domain network is missing or damaged (SHA-256 differs); reinstall")
    return path


def ship(task: str, image_size: int, seed: int = 0, data_root: str | None = None) -> Path:
    """Train (or take from the cache) a domain network and add it to the package's shipped weights."""
    import json

    from genlab.cache import sha256_of

    recipe = RECIPES[task]
    stem = weights_stem(recipe, image_size, seed)
    network = domain_network(task, image_size, seed, data_root)
    SHIPPED_DIR.mkdir(exist_ok=True)
    target = SHIPPED_DIR / f"{stem}.pt"
    with atomic_path(target) as temporary:
        torch.save({"state": network.net.state_dict(), "test_scores": network.test_scores}, temporary)
    index_path = SHIPPED_DIR / SHIPPED_INDEX
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    index[stem] = {
        "sha256": sha256_of(target),
        "recipe": dataclasses.asdict(recipe),
        "test_scores": network.test_scores,
    }
    atomic_write_text(index_path, json.dumps(index, indent=2, sort_keys=True) + "\n")
    return target


def main(argv: list[str] | None = None) -> None:
    """python -m genlab.judges.domain TASK SIZE [--retrain]: (re)train a domain network and ship it."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("task", choices=sorted(RECIPES))
    parser.add_argument("size", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain", action="store_true", help="ignore the cache and shipped weights: train anew")
    parser.add_argument("--data-root")
    args = parser.parse_args(argv)
    if args.retrain:
        from genlab.cache import cache_dir

        stem = weights_stem(RECIPES[args.task], args.size, args.seed)
        (cache_dir() / "domain" / f"{stem}.pt").unlink(missing_ok=True)
        (SHIPPED_DIR / f"{stem}.pt").unlink(missing_ok=True)
    print(f"shipped {ship(args.task, args.size, args.seed, args.data_root)}")


def _new_net(recipe: DomainRecipe, data: Task) -> nn.Module:
    spec = data.spec
    if recipe.kind == "classifier":
        return DomainClassifier(spec.target_channels, spec.num_classes, recipe.width)
    return DomainSegmenter(spec.target_channels, len(spec.class_names), recipe.width)


def _labels(recipe: DomainRecipe, items: dict[str, torch.Tensor]) -> torch.Tensor:
    """Class labels (B,) for a classifier, or per-pixel classes (B, H, W) read off the label map for a segmenter."""
    if recipe.kind == "classifier":
        return items["label"].long()
    from genlab.data.facades_synth import label_map_to_classes

    return label_map_to_classes(items["source"])


@torch.enable_grad()  # a scorer running under no_grad (the sweeps) may train a judge on first use
def _train(net: nn.Module, recipe: DomainRecipe, data: Task, seed: int, progress: bool) -> None:
    seed_everything(seed)
    split = data.split("train")
    labels = _labels(recipe, split.fields)
    optimizer = torch.optim.AdamW(net.parameters(), lr=recipe.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.learning_rate, total_steps=recipe.steps)
    net.train()
    for step in tqdm(range(recipe.steps), desc=f"training the {data.spec.name} {recipe.kind}", disable=not progress):
        generator = make_generator(derive_seed(seed, step))
        index = torch.randint(0, len(split), (recipe.batch_size,), generator=generator)
        images = uint8_to_signed(split.fields[recipe.image_field][index])
        target = labels[index]
        flip = torch.rand(len(index), generator=generator) < 0.5  # mirror images (and their label maps)
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        if recipe.kind == "segmenter":
            target = torch.where(flip[:, None, None], target.flip(-1), target)
        _, logits = net(images)
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


@torch.no_grad()
def _test_scores(net: nn.Module, recipe: DomainRecipe, data: Task, batch_size: int = 256) -> dict[str, float]:
    """Accuracy on the real test split (never seen in training)."""
    net.eval()
    split = data.split("test")
    labels = _labels(recipe, split.fields)
    predictions = []
    for start in range(0, len(split), batch_size):
        _, logits = net(uint8_to_signed(split.fields[recipe.image_field][start : start + batch_size]))
        predictions.append(logits.argmax(dim=1))
    predicted = torch.cat(predictions)
    if recipe.kind == "classifier":
        return {"accuracy": classification_accuracy(predicted, labels)}
    num_classes = len(data.spec.class_names)
    return segmentation_scores(confusion_matrix(predicted, labels, num_classes))


if __name__ == "__main__":
    main()
