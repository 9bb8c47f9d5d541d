"""LPIPS in pure torch: standard weight layouts, metric properties, a direct re-implementation. Never downloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genlab.metrics import perceptual
from genlab.metrics.features import FeatureWeightsMissing
from genlab.metrics.perceptual import LPIPS, LPIPSMetric, load_lpips, lpips_distance
from genlab.utils import GenlabError

# torchvision's features.N conv layers (N: (out, in, kernel)) and the LPIPS taps after them.
ALEX_CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
VGG_CONVS = {
    0: (64, 3, 3), 2: (64, 64, 3), 5: (128, 64, 3), 7: (128, 128, 3), 10: (256, 128, 3), 12: (256, 256, 3),
    14: (256, 256, 3), 17: (512, 256, 3), 19: (512, 512, 3), 21: (512, 512, 3), 24: (512, 512, 3),
    26: (512, 512, 3), 28: (512, 512, 3),
}  # fmt: skip
ALEX_FEATURE_PARAMETERS = 2_469_696  # torchvision alexnet 61,100,840 minus its classifier
VGG_FEATURE_PARAMETERS = 14_714_688  # torchvision vgg16 138,357,544 minus its classifier
HEAD_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


def random_backbone(convs: dict[int, tuple[int, int, int]], seed: int) -> dict[str, torch.Tensor]:
    """A torchvision-layout backbone file with random weights, plus classifier keys that must be ignored."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for index, (out_channels, in_channels, kernel) in convs.items():
        fan_in = in_channels * kernel * kernel
        shape = (out_channels, in_channels, kernel, kernel)
        state[f"features.{index}.weight"] = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
        state[f"features.{index}.bias"] = 0.05 * torch.randn(out_channels, generator=generator)
    # Real files hold (4096, 9216)... classifier matrices; tiny stand-ins keep the test fast.
    state["classifier.1.weight"] = torch.zeros(2, 2)
    state["classifier.1.bias"] = torch.zeros(2)
    return state


def random_heads(channels: tuple[int, ...], seed: int) -> dict[str, torch.Tensor]:
    """An lpips v0.1-layout heads file: lin{l}.model.1.weight (1, C, 1, 1), non-negative like the real ones."""
    generator = torch.Generator().manual_seed(seed)
    return {
        f"lin{index}.model.1.weight": 0.1 * torch.randn(1, width, 1, 1, generator=generator).abs()
        for index, width in enumerate(channels)
    }


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("lpips")
    files = {}
    for net, convs, backbone_name in (
        ("alex", ALEX_CONVS, "alexnet-owt-7be5be79.pth"),
        ("vgg", VGG_CONVS, "vgg16-397923af.pth"),
    ):
        backbone, heads = directory / backbone_name, directory / f"{net}.pth"
        torch.save(random_backbone(convs, seed=1), backbone)
        torch.save(random_heads(HEAD_CHANNELS[net], seed=2), heads)
        files[net] = (backbone, heads)
    return files


@pytest.fixture(scope="module")
def alex(weight_files) -> LPIPS:
    return load_lpips("alex", *weight_files["alex"])


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty caches, no weights directory, no lpips package, downloads to a closed port."""
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("GENLAB_WEIGHTS_MIRROR", "http://127.0.0.1:9")
    monkeypatch.delenv("GENLAB_LPIPS_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(perceptual, "_lpips_package_heads", lambda net: None)
    return tmp_path


def images(count: int, size: int, seed: int, channels: int = 3) -> torch.Tensor:
    return torch.rand(count, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def reference_taps(x: torch.Tensor, backbone: dict[str, torch.Tensor], net: str) -> list[torch.Tensor]:
    """The five ReLU outputs LPIPS compares, spelled out with functional ops on the raw state dict."""

    def conv(x: torch.Tensor, index: int, stride: int = 1, padding: int = 1) -> torch.Tensor:
        weight, bias = backbone[f"features.{index}.weight"], backbone[f"features.{index}.bias"]
        return F.relu(F.conv2d(x, weight, bias, stride=stride, padding=padding))

    if net == "alex":
        relu1 = conv(x, 0, stride=4, padding=2)
        relu2 = conv(F.max_pool2d(relu1, 3, 2), 3, padding=2)
        relu3 = conv(F.max_pool2d(relu2, 3, 2), 6)
        relu4 = conv(relu3, 8)
        return [relu1, relu2, relu3, relu4, conv(relu4, 10)]
    taps, blocks = [], [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]
    for block in blocks:
        x = F.max_pool2d(x, 2) if taps else x
        for index in block:
            x = conv(x, index)
        taps.append(x)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    return taps


def reference_lpips(a, b, backbone, heads, net) -> list[torch.Tensor]:
    """Per-layer LPIPS terms: unit-normalise channels, squared difference, weighted channel sum, spatial mean."""
    terms = []
    taps_a = reference_taps((a - SHIFT) / SCALE, backbone, net)
    taps_b = reference_taps((b - SHIFT) / SCALE, backbone, net)
    for index, (fa, fb) in enumerate(zip(taps_a, taps_b)):
        na = fa / (fa.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        weight = heads[f"lin{index}.model.1.weight"].view(1, -1, 1, 1)
        terms.append((weight * (na - nb) ** 2).sum(dim=1).mean(dim=(1, 2)))
    return terms


def test_state_dict_layouts_match_torchvision_and_lpips():
    for net, convs, parameters in (
        ("alex", ALEX_CONVS, ALEX_FEATURE_PARAMETERS),
        ("vgg", VGG_CONVS, VGG_FEATURE_PARAMETERS),
    ):
        model = LPIPS(net)
        backbone = model.net.state_dict()
        expected = {f"features.{i}.weight": (o, c, k, k) for i, (o, c, k) in convs.items()}
        expected |= {f"features.{i}.bias": (o,) for i, (o, _, _) in convs.items()}
        assert {key: tuple(value.shape) for key, value in backbone.items()} == expected
        assert sum(p.numel() for p in model.net.parameters()) == parameters
        heads = {key: tuple(value.shape) for key, value in model.heads.state_dict().items()}
        assert heads == {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(HEAD_CHANNELS[net])}


def test_distance_properties(alex):
    a, b = images(3, 64, seed=3), images(3, 64, seed=4)
    with torch.no_grad():
        d_ab, d_ba, d_aa = alex(a, b), alex(b, a), alex(a, a)
    assert d_ab.shape == (3,)
    torch.testing.assert_close(d_aa, torch.zeros(3), rtol=0, atol=1e-7)
    torch.testing.assert_close(d_ab, d_ba)
    assert (d_ab > 0).all()
    torch.testing.assert_close(lpips_distance(a, b, alex), d_ab)


@pytest.mark.parametrize(("net", "size"), [("alex", 64), ("vgg", 32)])
def test_matches_direct_reimplementation(weight_files, net, size):
    backbone_file, heads_file = weight_files[net]
    model = load_lpips(net, backbone_file, heads_file)
    backbone = torch.load(backbone_file, weights_only=True)
    heads = torch.load(heads_file, weights_only=True)
    a, b = images(2, size, seed=5), images(2, size, seed=6)
    with torch.no_grad():
        ours = model.layer_distances(a, b)
        total = model(a, b)
    expected = reference_lpips(a, b, backbone, heads, net)
    assert len(ours) == 5
    for term, reference in zip(ours, expected):
        torch.testing.assert_close(term, reference, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(total, torch.stack(expected).sum(dim=0), rtol=1e-5, atol=1e-7)


def test_matches_the_lpips_package(weight_files):
    pytest.importorskip("torchvision")
    lpips = pytest.importorskip("lpips")
    backbone_file, heads_file = weight_files["alex"]
    reference = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    backbone = torch.load(backbone_file, weights_only=True)
    state = reference.state_dict()
    # lpips splits torchvision's features into slices that keep the original layer indices as names.
    for index, slice_number in {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}.items():
        for kind in ("weight", "bias"):
            state[f"net.slice{slice_number}.{index}.{kind}"] = backbone[f"features.{index}.{kind}"]
    state.update(torch.load(heads_file, weights_only=True))
    reference.load_state_dict(state)
    reference.eval()
    a, b = images(2, 64, seed=7), images(2, 64, seed=8)
    with torch.no_grad():
        expected = reference(a, b).flatten()
        ours = load_lpips("alex", backbone_file, heads_file)(a, b)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_inputs_grey_uint8_and_gradients(alex):
    grey_a, grey_b = images(2, 40, seed=9, channels=1), images(2, 40, seed=10, channels=1)
    with torch.no_grad():
        torch.testing.assert_close(alex(grey_a, grey_b), alex(grey_a.repeat(1, 3, 1, 1), grey_b.repeat(1, 3, 1, 1)))
    fake = images(2, 40, seed=11).requires_grad_(True)
    alex(fake, images(2, 40, seed=12)).sum().backward()  # usable as a perceptual loss
    assert fake.grad is not None and torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0
    assert not any(parameter.requires_grad for parameter in alex.parameters())


def test_bad_inputs_are_clear_errors(alex):
    with pytest.raises(GenlabError, match="differ in shape"):
        alex(images(2, 64, seed=0), images(2, 48, seed=0))
    with pytest.raises(GenlabError, match="too small"):
        alex(images(1, 16, seed=0), images(1, 16, seed=1))
    with pytest.raises(GenlabError, match="alex, vgg"):
        LPIPS("squeeze")


def test_metric_accumulates_the_mean(alex):
    metric = LPIPSMetric(alex)
    batches = [(images(2, 48, seed=s), images(2, 48, seed=s + 100)) for s in range(2)]
    with torch.no_grad():
        expected = torch.cat([alex(a, b) for a, b in batches]).double().mean()
    for a, b in batches:
        metric.update(a, b)
    torch.testing.assert_close(metric.compute(), expected)
    metric.reset()
    with pytest.raises(GenlabError):
        metric.compute()


def test_mismatched_files_name_the_file_and_the_key(weight_files, tmp_path):
    backbone_file, heads_file = weight_files["alex"]
    backbone = torch.load(backbone_file, weights_only=True)
    del backbone["features.8.bias"]
    broken_backbone = tmp_path / "backbone.pth"
    torch.save(backbone, broken_backbone)
    with pytest.raises(GenlabError) as error:
        load_lpips("alex", broken_backbone, heads_file)
    assert "features.8.bias" in str(error.value) and str(broken_backbone) in str(error.value)

    heads = torch.load(heads_file, weights_only=True)
    heads["lin2.model.1.weight"] = torch.zeros(1, 100, 1, 1)
    broken_heads = tmp_path / "heads.pth"
    torch.save(heads, broken_heads)
    with pytest.raises(GenlabError, match=r"lin2\.model\.1\.weight"):
        load_lpips("alex", backbone_file, broken_heads)


def test_weights_directory_from_environment(weight_files, offline, monkeypatch, alex):
    backbone_file, _ = weight_files["alex"]
    monkeypatch.setenv("GENLAB_LPIPS_WEIGHTS_DIR", str(backbone_file.parent))  # holds alexnet-owt-... and alex.pth
    a, b = images(2, 48, seed=13), images(2, 48, seed=14)
    with torch.no_grad():
        torch.testing.assert_close(load_lpips("alex")(a, b), alex(a, b))


def test_offline_without_weights_raises_feature_weights_missing(offline):
    with pytest.raises(FeatureWeightsMissing) as error:
        load_lpips("vgg")
    message = str(error.value)
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert "GENLAB_LPIPS_WEIGHTS_DIR" in message and "lpips" in message
    assert str(offline / "cache" / "weights") in message
