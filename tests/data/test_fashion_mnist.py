"""Fashion-MNIST: the IDX reader, where the files are looked for, the splits and the edges2fashion tasks."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.config import DataConfig
from genlab.data import fashion_mnist
from genlab.data.fashion_mnist import (
    CLASS_NAMES,
    IMAGES_MAGIC,
    available,
    build_edges2fashion_task,
    build_edges2fashion_unpaired_task,
    build_fashion_mnist_task,
    edge_map,
    find_files,
    read_idx,
    write_idx,
)
from genlab.utils import GenlabError, uint8_to_signed

REAL = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No real cache, no $GENLAB_DATA, no system folder unless a test puts it back."""
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GENLAB_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DATA_DIRS", (tmp_path / "no-system-copy",))


def _garments(count: int, seed: int = 0) -> np.ndarray:
    """Bright rectangles of random size on black: garment-like blobs with clear edges."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    for n in range(count):
        top, left = rng.integers(2, 8, 2)
        bottom, right = rng.integers(18, 26, 2)
        images[n, top:bottom, left:right] = rng.integers(120, 256)
    return images


def _write_set(folder: Path, train: int = 40, test: int = 10, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    rng = np.random.default_rng(1)
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", _garments(train, 0))
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", rng.integers(0, 10, train).astype(np.uint8))
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", _garments(test, 1))
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", rng.integers(0, 10, test).astype(np.uint8))
    return folder


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_idx_round_trip_exactly(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / name, images)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    loaded = read_idx(path, IMAGES_MAGIC)
    assert loaded.dtype == np.uint8 and loaded.shape == (7, 28, 28)
    assert np.array_equal(loaded, images) and loaded.flags.writeable
    raw_header = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    assert raw_header[:4] == b"\x00\x00\x08\x03" and raw_header[4:8] == (7).to_bytes(4, "big")


def test_idx_other_types(tmp_path):
    for array in (np.arange(-5, 5, dtype=np.int32).reshape(2, 5), np.linspace(0, 1, 6, dtype=np.float32)):
        loaded = read_idx(write_idx(tmp_path / f"a-{array.dtype}", array))
        assert loaded.dtype == array.dtype and np.array_equal(loaded, array)


def test_bad_idx_files_name_the_file(tmp_path):
    path = write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(GenlabError, match="labels-idx1-ubyte.*magic number 0x00000801, expected 0x00000803"):
        read_idx(path, IMAGES_MAGIC)
    (tmp_path / "wrong-magic").write_bytes(b"\x12\x34\x08\x01" + (5).to_bytes(4, "big") + bytes(5))
    with pytest.raises(GenlabError, match="wrong-magic.*bad magic number 0x12340801"):
        read_idx(tmp_path / "wrong-magic")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(6))
    with pytest.raises(GenlabError, match="short.*6 data bytes.*announces 10"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + bytes(3))
    with pytest.raises(GenlabError, match="long"):
        read_idx(tmp_path / "long")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(GenlabError, match="empty"):
        read_idx(tmp_path / "empty")
    good = write_idx(tmp_path / "cut.gz", np.zeros((50, 28, 28), np.uint8)).read_bytes()
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(GenlabError, match="cut.gz.*gzip"):
        read_idx(tmp_path / "cut.gz")
    with pytest.raises(GenlabError, match="absent.*not found"):
        read_idx(tmp_path / "absent")


def test_missing_files_say_where_genlab_looked_and_name_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path / "env-data"))
    config = DataConfig(task="fashion-mnist", data_root=str(tmp_path / "root"))
    assert not available(config)
    with pytest.raises(GenlabError) as caught:
        build_fashion_mnist_task(config).split("train")
    message = str(caught.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-root" in message
    for place in ("root", "env-data", "no-system-copy"):
        assert str(tmp_path / place) in message
    _write_set(tmp_path / "root", gz=False)
    (tmp_path / "root" / "t10k-labels-idx1-ubyte").unlink()  # incomplete: not used
    assert not available(config)


def test_search_order_data_root_then_env_then_system(tmp_path, monkeypatch):
    _write_set(tmp_path / "root")
    _write_set(tmp_path / "env" / "fashion-mnist")  # a fashion-mnist/ subfolder is found too
    _write_set(tmp_path / "system")
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DATA_DIRS", (tmp_path / "system",))
    root_config = DataConfig(task="fashion-mnist", data_root=str(tmp_path / "root"))
    assert find_files(root_config)["train_images"].parent == tmp_path / "root"
    assert find_files(DataConfig(task="fashion-mnist"))["train_images"].parent == tmp_path / "env" / "fashion-mnist"
    monkeypatch.delenv("GENLAB_DATA")
    assert find_files(DataConfig(task="fashion-mnist"))["test_labels"].parent == tmp_path / "system"


@pytest.mark.parametrize("size", [28, 32])
def test_fashion_mnist_task(tmp_path, size):
    _write_set(tmp_path / "data", train=40, test=10)
    config = DataConfig(task="fashion-mnist", image_size=size, data_root=str(tmp_path / "data"))
    task = build_fashion_mnist_task(config)
    spec = task.spec
    assert (spec.kind, spec.num_classes, spec.source_channels, spec.image_size) == ("labelled", 10, 1, size)
    assert spec.class_names == CLASS_NAMES and spec.class_names[9] == "Ankle boot"
    train, val, test = task.split("train"), task.split("val"), task.split("test")
    # Small sets split 90/10 (the real 60,000 split 50,000/10,000).
    assert (len(train), len(val), len(test)) == (36, 4, 10)
    assert train.fields["image"].shape == (36, 1, size, size) and train.fields["image"].dtype == torch.uint8
    assert train.fields["label"].dtype == torch.int64
    labels = read_idx(tmp_path / "data" / "train-labels-idx1-ubyte.gz")
    assert train.fields["label"].tolist() == labels[:36].tolist()
    assert val.fields["label"].tolist() == labels[36:].tolist()
    assert val.names[0] == "train_00036" and test.names[-1] == "t10k_00009"
    if size == 28:  # native size: an exact copy
        assert np.array_equal(train.fields["image"][:, 0].numpy(), _garments(40, 0)[:36])


def test_edges2fashion_paired_and_unpaired(tmp_path):
    _write_set(tmp_path / "data", train=40, test=10)
    config = DataConfig(task="edges2fashion", image_size=32, data_root=str(tmp_path / "data"))
    task = build_edges2fashion_task(config)
    assert (task.spec.kind, task.spec.source_channels, task.spec.target_channels) == ("paired", 1, 1)
    test = task.split("test")
    edges, garments = test.fields["source"], test.fields["target"]
    assert edges.shape == garments.shape == (10, 1, 32, 32)
    assert set(edges.unique().tolist()) == {0, 255}
    assert torch.equal(garments, build_fashion_mnist_task(config).split("test").fields["image"])
    # Edges trace the garment's outline: none far inside or far outside the rectangle.
    for edge, garment in zip(edges[:, 0], garments[:, 0], strict=True):
        inside = garment > 60
        assert edge[inside].any() and edge.bool().sum() < inside.sum()
        rows, columns = torch.nonzero(edge, as_tuple=True)
        g_rows, g_columns = torch.nonzero(inside, as_tuple=True)
        assert rows.min() >= g_rows.min() - 2 and rows.max() <= g_rows.max() + 2
        assert columns.min() >= g_columns.min() - 2 and columns.max() <= g_columns.max() + 2
    unpaired = build_edges2fashion_unpaired_task(
        DataConfig(task="edges2fashion-unpaired", image_size=32, data_root=str(tmp_path / "data"))
    )
    assert unpaired.spec.kind == "unpaired"
    split = unpaired.split("test")
    assert torch.equal(split.fields["a"], edges[:5]) and torch.equal(split.fields["b"], garments[5:])
    assert split.names == test.names[:5]
    assert unpaired.training_batch(step=0, batch_size=4, seed=0)["a"].shape == (4, 1, 32, 32)


@pytest.mark.parametrize("task_name", ["fashion-mnist", "edges2fashion", "edges2fashion-unpaired"])
def test_garment_tasks_train_without_crop_jitter_by_default(tmp_path, task_name):
    """Centred garments: a training batch is its split's images (mirrored or not), never rescaled or shifted;
    an explicit load_scale still jitters."""
    _write_set(tmp_path / "data", train=40, test=10)
    builders = {"fashion-mnist": build_fashion_mnist_task, "edges2fashion": build_edges2fashion_task,
                "edges2fashion-unpaired": build_edges2fashion_unpaired_task}
    config = DataConfig(task=task_name, image_size=32, data_root=str(tmp_path / "data"))
    task = builders[task_name](config)
    assert (task.load_scale, task.load_size) == (1.0, 32)
    images = {key: uint8_to_signed(value) for key, value in task.split("train").fields.items()
              if value.dtype == torch.uint8}
    batch = task.training_batch(step=3, batch_size=8, seed=0)
    for key, value in batch.items():
        if key == "label":
            continue
        for image in value:  # every image is one of its field's training images, as it is or mirrored
            candidates = torch.cat([images[key], images[key].flip(-1)])
            assert (candidates - image).abs().flatten(1).amax(1).min() == 0
    jittered = builders[task_name](DataConfig(task=task_name, image_size=32, load_scale=300 / 256,
                                              data_root=str(tmp_path / "data")))
    assert (jittered.load_scale, jittered.load_size) == (300 / 256, 38)
    key = next(key for key in batch if key != "label")
    crops = jittered.training_batch(step=3, batch_size=8, seed=0)[key]
    candidates = torch.cat([images[key], images[key].flip(-1)])
    assert any((candidates - crop).abs().flatten(1).amax(1).min() > 0.1 for crop in crops)


def test_edge_map_of_a_square_is_its_outline():
    image = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    image[..., 8:20, 8:20] = 200
    edges = edge_map(image)[0, 0].bool()
    assert edges[8:20, 7:9].any(dim=1).all() and edges[8:20, 19:21].any(dim=1).all()  # left and right sides
    assert not edges[11:17, 11:17].any() and not edges[:5].any()  # nothing inside or far outside
    assert not edge_map(torch.zeros(2, 1, 16, 16, dtype=torch.uint8)).any()


def test_edge_maps_are_cached_on_disk(tmp_path, monkeypatch):
    _write_set(tmp_path / "data", train=20, test=6)
    config = DataConfig(task="edges2fashion", image_size=32, data_root=str(tmp_path / "data"))
    first = build_edges2fashion_task(config).split("test").fields["source"]
    cached = list((tmp_path / "cache" / "fashion-mnist").glob("*edges-32-test*.pt"))
    assert len(cached) == 1
    fashion_mnist._edge_maps.cache_clear()
    monkeypatch.setattr(fashion_mnist, "edge_map", lambda *a, **k: pytest.fail("edges should come from the cache"))
    assert torch.equal(build_edges2fashion_task(config).split("test").fields["source"], first)


@pytest.mark.skipif(not REAL.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_files_when_installed():
    files = find_files(DataConfig(data_root=str(REAL)))
    train_labels, test_labels = read_idx(files["train_labels"]), read_idx(files["test_labels"])
    assert train_labels.shape == (60000,) and test_labels.shape == (10000,)
    assert train_labels.min() == 0 and train_labels.max() == 9 and np.bincount(test_labels).tolist() == [1000] * 10
    assert read_idx(files["test_images"]).shape == (10000, 28, 28)
    assert read_idx(files["train_images"], IMAGES_MAGIC).shape == (60000, 28, 28)
