"""FID InceptionV3: standard weight layout, loading from a file, outputs, error messages. Never downloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genlab.metrics.features import (
    INCEPTION_FILENAME,
    INCEPTION_URL,
    FeatureExtractor,
    FeatureWeightsMissing,
    FIDInceptionV3,
    extract_features,
    iter_features,
    load_inception,
)
from genlab.utils import GenlabError

# Representative keys and shapes of pytorch-fid's pt_inception-2015-12-05-6726825d.pth (torchvision's Inception3
# names, num_classes=1008, no AuxLogits).
REFERENCE_SHAPES: dict[str, tuple[int, ...]] = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.weight": (32,),
    "Conv2d_1a_3x3.bn.bias": (32,),
    "Conv2d_1a_3x3.bn.running_mean": (32,),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_2a_3x3.conv.weight": (32, 32, 3, 3),
    "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
    "Conv2d_3b_1x1.conv.weight": (80, 64, 1, 1),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch1x1.conv.weight": (64, 192, 1, 1),
    "Mixed_5b.branch5x5_1.conv.weight": (48, 192, 1, 1),
    "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_5b.branch3x3dbl_3.conv.weight": (96, 96, 3, 3),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5c.branch_pool.conv.weight": (64, 256, 1, 1),
    "Mixed_5d.branch1x1.conv.weight": (64, 288, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6a.branch3x3dbl_3.conv.weight": (96, 96, 3, 3),
    "Mixed_6b.branch7x7_1.conv.weight": (128, 768, 1, 1),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6b.branch7x7_3.conv.weight": (192, 128, 7, 1),
    "Mixed_6b.branch7x7dbl_5.conv.weight": (192, 128, 1, 7),
    "Mixed_6c.branch7x7dbl_2.conv.weight": (160, 160, 7, 1),
    "Mixed_6e.branch7x7_1.conv.weight": (192, 768, 1, 1),
    "Mixed_6e.branch_pool.conv.weight": (192, 768, 1, 1),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch1x1.conv.weight": (320, 1280, 1, 1),
    "Mixed_7b.branch3x3_2a.conv.weight": (384, 384, 1, 3),
    "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7b.branch3x3dbl_2.conv.weight": (384, 448, 3, 3),
    "Mixed_7b.branch_pool.conv.weight": (192, 1280, 1, 1),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "Mixed_7c.branch_pool.bn.running_var": (192,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
# torchvision documents 27,161,264 parameters for inception_v3 (1000 classes, with AuxLogits). The FID network
# drops AuxLogits (conv0 98,560 + conv1 2,459,136 + fc 769,000 = 3,326,696) and has 8 more classes
# (8 * 2049 = 16,392): 27,161,264 - 3,326,696 + 16,392 = 23,850,960.
FID_INCEPTION_PARAMETERS = 23_850_960
# 94 conv+BN units x 5 tensors (conv weight, BN weight, bias, running mean, running var) + fc weight and bias.
FID_INCEPTION_KEYS = 94 * 5 + 2


def random_inception_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the standard layout, with BN statistics that keep activations tame."""
    generator = torch.Generator().manual_seed(seed)
    state = FIDInceptionV3().state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith(("running_var", "bn.weight")):
            state[key] = 0.5 + torch.rand(value.shape, generator=generator)
        elif key.endswith(("running_mean", "bn.bias", "fc.bias")):
            state[key] = 0.1 * torch.randn(value.shape, generator=generator)
        else:
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=generator) * (2.0 / fan_in) ** 0.5
    # Older files (like the 2019 pytorch-fid export may be) carry no BN counters; loading must not need them.
    return {key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILENAME
    torch.save(random_inception_state(), path)
    return path


@pytest.fixture(scope="module")
def inception(weights_file) -> FIDInceptionV3:
    return load_inception(weights_file)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No weights anywhere and no network: empty caches, no env paths, downloads to a closed port."""
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("GENLAB_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("GENLAB_WEIGHTS_MIRROR", raising=False)
    monkeypatch.setenv("GENLAB_INCEPTION_URL", f"http://127.0.0.1:9/{INCEPTION_FILENAME}")
    return tmp_path


def test_state_dict_layout_matches_the_standard_file():
    state = {k: v for k, v in FIDInceptionV3().state_dict().items() if not k.endswith("num_batches_tracked")}
    for key, shape in REFERENCE_SHAPES.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    assert len(state) == FID_INCEPTION_KEYS
    assert not any(key.startswith("AuxLogits") for key in state)
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == FID_INCEPTION_PARAMETERS
    assert all(module.eps == 0.001 for module in FIDInceptionV3().modules() if isinstance(module, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [32, 64])
def test_loaded_network_gives_features_and_probabilities(inception, channels, size):
    images = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(size)) * 2 - 1
    with torch.no_grad():
        out = inception(images)
    assert isinstance(inception, FeatureExtractor) and inception.dims == 2048
    assert out["features"].shape == (2, 2048)
    assert out["logits"].shape == (2, 1008) and out["probs"].shape == (2, 1008)
    assert torch.isfinite(out["features"]).all() and (out["features"] >= 0).all()  # pooled ReLU outputs
    torch.testing.assert_close(out["probs"].sum(dim=1), torch.ones(2), rtol=0, atol=1e-5)
    assert not torch.allclose(out["features"][0], out["features"][1])  # different images, different features


def test_grey_input_is_rgb_with_equal_channels(inception):
    grey = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        from_grey = inception(grey)["features"]
        from_rgb = inception(grey.repeat(1, 3, 1, 1))["features"]
    torch.testing.assert_close(from_grey, from_rgb)


def test_matches_pytorch_fid_preprocessing_and_unbiased_logits(inception):
    # pytorch-fid: [0, 1] images resized to 299 (bilinear, align_corners=False), then scaled to [-1, 1].
    unit = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    reference_input = 2 * F.interpolate(unit, size=(299, 299), mode="bilinear", align_corners=False) - 1
    with torch.no_grad():
        out = inception(unit * 2 - 1)
        reference_pool = inception.pool3(reference_input)
    torch.testing.assert_close(out["features"], reference_pool, rtol=1e-4, atol=1e-5)
    # IS logits are pool3 @ W^T without the fc bias (torch-fidelity's logits_unbiased).
    torch.testing.assert_close(out["logits"], out["features"] @ inception.fc.weight.T)
    torch.testing.assert_close(out["probs"], out["logits"].softmax(dim=1))


def test_network_is_frozen_and_in_eval_mode(inception):
    assert not inception.training
    assert not any(parameter.requires_grad for parameter in inception.parameters())


def test_environment_variable_path_is_used(weights_file, monkeypatch):
    monkeypatch.setenv("GENLAB_INCEPTION_WEIGHTS", str(weights_file))
    model = load_inception()
    torch.testing.assert_close(model.fc.weight, torch.load(weights_file, weights_only=True)["fc.weight"])


@pytest.mark.parametrize(
    ("edit", "bad_key"),
    [
        ("drop", "Mixed_6b.branch7x7_2.conv.weight"),
        ("reshape", "fc.weight"),
        ("extra", "AuxLogits.fc.weight"),
    ],
)
def test_mismatched_file_names_the_file_and_the_key(tmp_path, edit, bad_key):
    state = random_inception_state()
    if edit == "drop":
        del state[bad_key]
    elif edit == "reshape":
        state[bad_key] = torch.zeros(1000, 2048)
    else:
        state[bad_key] = torch.zeros(1000, 768)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(GenlabError) as error:
        load_inception(path)
    assert bad_key in str(error.value) and str(path) in str(error.value)


def test_unreadable_file_is_a_clear_error(tmp_path):
    path = tmp_path / "page.pth"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(GenlabError, match="not a readable torch weight file"):
        load_inception(path)


def test_missing_explicit_path_says_how_to_supply_weights(tmp_path):
    with pytest.raises(FeatureWeightsMissing) as error:
        load_inception(tmp_path / "nowhere.pth")
    message = str(error.value)
    assert INCEPTION_URL in message and "--inception-weights" in message and "GENLAB_INCEPTION_WEIGHTS" in message


def test_offline_without_weights_raises_feature_weights_missing(offline):
    with pytest.raises(FeatureWeightsMissing) as error:
        load_inception()
    message = str(error.value)
    assert INCEPTION_URL in message
    assert "--inception-weights" in message and "GENLAB_INCEPTION_WEIGHTS" in message
    assert str(offline / "cache" / "weights" / INCEPTION_FILENAME) in message
    assert not (offline / "cache" / "weights" / INCEPTION_FILENAME).exists()


def test_cached_file_is_found_without_download(offline, weights_file):
    cached = offline / "cache" / "weights" / INCEPTION_FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(weights_file.read_bytes())
    assert isinstance(load_inception(), FIDInceptionV3)
    # The first use recorded its SHA-256 in the cache; a file changed on disk afterwards is caught.
    cached.write_bytes(weights_file.read_bytes() + b"junk")
    with pytest.raises(GenlabError, match="SHA-256"):
        load_inception()


def test_downloaded_file_with_wrong_hash_is_rejected_and_removed(offline, monkeypatch, weights_file):
    from genlab import cache as download

    def fake_transfer(url, temporary, *args, **kwargs):
        Path(temporary).write_bytes(weights_file.read_bytes())  # random weights: hash is not 6726825d...

    monkeypatch.setattr(download, "_download", fake_transfer)
    with pytest.raises(GenlabError, match="6726825d"):
        load_inception()
    assert not (offline / "cache" / "weights" / INCEPTION_FILENAME).exists()
    assert download.recorded_sha256(offline / "cache" / "weights" / INCEPTION_FILENAME) is None


class _MeanColour(torch.nn.Module):
    """A tiny extractor following the FeatureExtractor protocol: per-channel means as features."""

    name = "mean-colour"
    dims = 3

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = images.mean(dim=(2, 3))  # (N, 3)
        return {"features": features, "probs": features.softmax(dim=1)}


def test_extract_features_streams_and_concatenates_batches():
    extractor = _MeanColour()
    assert isinstance(extractor, FeatureExtractor)
    batches = [torch.rand(3, 3, 8, 8) * 2 - 1, torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)]
    out = extract_features(extractor, iter(batches))
    assert out["features"].shape == (5, 3) and out["probs"].shape == (5, 3)
    torch.testing.assert_close(out["features"][:3], batches[0].mean(dim=(2, 3)))
    torch.testing.assert_close(out["features"][3:], (batches[1].float() / 127.5 - 1).mean(dim=(2, 3)))
    assert [o["features"].shape[0] for o in iter_features(extractor, batches)] == [3, 2]
    with pytest.raises(GenlabError):
        extract_features(extractor, [])
