"""Probe (issue 10): an edges -> garment folder built without genlab's edge code, and its runs scored with
genlab's garment judge.

`build OUT` writes pix2pix A|B pairs (grayscale, 32 px) from the Fashion-MNIST IDX files: scikit-image's Canny
(sigma 1, thresholds 0.05/0.15) on the 28 px garment, then both halves resized to 32 px with Pillow (bilinear);
genlab's `edges2fashion` instead resizes first (bicubic) and runs its own edge detector at 32 px. OUT/train holds
the 60,000 training images, OUT/test the first 2,000 test images (genlab carves val off train). A user's
folder, so `--task folder:OUT` trains on it with whatever a folder gets by default.

`score RUN...` translates the first 1000 test pairs of each folder-trained run (as `genlab evaluate` does) and
prints, beside the run's PSNR and SSIM from its eval.json, the domain FID of its outputs against those 1000 test
garments and their class accuracy under the `edges2fashion` domain classifier (labels from the IDX file), and
the same classifier's accuracy on the real garments.

    python scripts/probes/edges_folder.py build edges-canny        # needs scikit-image (the test extra)
    python scripts/probes/edges_folder.py score RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genlab.config import DataConfig
from genlab.data.fashion_mnist import find_files

TEST_ITEMS = 2000
SCORED = 1000


def idx_array(path: Path, header: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return np.frombuffer(handle.read(), np.uint8, offset=header).copy()


def build(out: Path) -> None:
    from skimage.feature import canny

    files = find_files(DataConfig(task="fashion-mnist"))
    for split, key, limit in (("train", "train_images", None), ("test", "test_images", TEST_ITEMS)):
        images = idx_array(files[key], 16).reshape(-1, 28, 28)[:limit]
        (out / split).mkdir(parents=True, exist_ok=True)
        for index, garment in enumerate(images):
            edges = canny(garment / 255.0, sigma=1.0, low_threshold=0.05, high_threshold=0.15)
            pair = Image.new("L", (64, 32))
            pair.paste(Image.fromarray(edges.astype(np.uint8) * 255).resize((32, 32), Image.BILINEAR), (0, 0))
            pair.paste(Image.fromarray(garment).resize((32, 32), Image.BILINEAR), (32, 0))
            pair.save(out / split / f"{split}_{index:05d}.png")
        print(f"wrote {len(images)} pairs to {out / split}")


def score(runs: list[str]) -> None:
    from genlab.api import load_run
    from genlab.evaluate import limited, model_translator, translate_split
    from genlab.judges.domain import domain_network
    from genlab.metrics.distribution import fid
    from genlab.utils import uint8_to_signed

    labels = torch.from_numpy(idx_array(find_files(DataConfig(task="fashion-mnist"))["test_labels"], 8)[:SCORED])
    judge = domain_network("edges2fashion", 32, progress=False)
    for run in runs:
        loaded = load_run(run, device="cpu")
        test = limited(loaded.task().split("test"), SCORED)
        if [int(name.split("_")[1]) for name in test.names] != list(range(SCORED)):
            raise SystemExit(f"{run}: its test split is not the first {SCORED} Fashion-MNIST test items in order")
        outputs = translate_split(model_translator(loaded.model), test.fields["source"], 64)
        fake, real = judge(uint8_to_signed(outputs)), judge(uint8_to_signed(test.fields["target"]))
        scores = {
            "domain_fid": float(fid(fake["features"], real["features"])),
            "class_accuracy": float((fake["probs"].argmax(1) == labels.long()).float().mean()),
            "real_accuracy": float((real["probs"].argmax(1) == labels.long()).float().mean()),
        }
        eval_file = Path(run) / "eval.json"
        if eval_file.is_file():
            scores.update({s["metric"]: s["value"] for s in json.loads(eval_file.read_text())["scores"]
                           if s["metric"] in ("psnr", "ssim")})
        print(run, f"step {loaded.step}", json.dumps({key: round(value, 4) for key, value in scores.items()}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build").add_argument("out", type=Path)
    commands.add_parser("score").add_argument("runs", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.out)
    else:
        score(args.runs)


if __name__ == "__main__":
    main()
