"""The diffusion U-Net: shapes for every conditioning, the seed network, gradient flow, the null label."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from genlab.nn.diffusion_unet import (
    DiffusionUNet,
    DiffusionUNetConfig,
    ddpm_unet_config,
    quick_unet_config,
    seed_unet_config,
)
from genlab.nn.embeddings import LabelEmbedding, drop_labels, seed_noise_embedding, timestep_embedding
from genlab.utils import GenlabError


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


def tiny_config(image_channels: int, image_size: int, **overrides) -> DiffusionUNetConfig:
    """A very small version of the quick preset so the tests stay fast."""
    config = dataclasses.replace(quick_unet_config(image_channels, image_size), base_width=8, attention_heads=2)
    return dataclasses.replace(config, **overrides)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("kind", ["unconditional", "class", "image"])
def test_output_shape_equals_input_shape(size, kind):
    overrides = {"unconditional": {}, "class": {"num_classes": 10}, "image": {"cond_channels": 3}}[kind]
    net = DiffusionUNet(tiny_config(3, size, **overrides))
    x_t = torch.randn(2, 3, size, size)
    cond = {"unconditional": None, "class": torch.tensor([3, 10]), "image": torch.randn(2, 3, size, size)}[kind]
    output = net(x_t, torch.tensor([0, 999]), cond)
    assert output.shape == x_t.shape
    assert torch.isfinite(output).all()


def test_float_timesteps_and_scalar_timestep():
    net = DiffusionUNet(tiny_config(1, 32))
    x_t = torch.randn(2, 1, 32, 32)
    assert net(x_t, torch.tensor([0.25, 0.5])).shape == x_t.shape
    assert net(x_t, 17).shape == x_t.shape


@pytest.mark.parametrize("size", [32, 64])
def test_seed_config_builds_and_runs(size):
    config = seed_unet_config(image_channels=3, cond_channels=3, image_size=size)
    assert config.widths == (64, 128, 256, 256, 512)  # seed 000 table 4: D64 D128 D256 D256, R512
    assert config.norm == "batch" and config.downsample == "avgpool" and config.upsample == "bilinear"
    net = DiffusionUNet(config)
    x_t, source = torch.randn(2, 3, size, size), torch.randn(2, 3, size, size)
    assert net(x_t, torch.tensor([5, 900]), source).shape == x_t.shape
    assert net.stem.kernel_size == (1, 1) and net.stem.out_channels == 32  # C32k1
    # The 32-d embedding is concatenated to the stem output: the first residual block sees 64 channels.
    assert net.encoder[0][0].block.conv1.in_channels == 64
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())


@pytest.mark.parametrize("width", [8, 32])
def test_embedding_survives_group_norm(width):
    """Time and label reach the output through every level, also in narrow nets."""
    config = tiny_config(1, 32, num_classes=3, base_width=width, channel_mults=(1, 2), attention_resolutions=())
    net = DiffusionUNet(config)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    x_t = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        reference = net(x_t, torch.tensor([10, 10]), torch.tensor([0, 0]))
        other_time = net(x_t, torch.tensor([900, 900]), torch.tensor([0, 0]))
        other_label = net(x_t, torch.tensor([10, 10]), torch.tensor([1, 1]))
    scale = reference.abs().mean()
    assert (other_time - reference).abs().mean() > 1e-2 * scale
    assert (other_label - reference).abs().mean() > 1e-2 * scale


def test_gradients_reach_every_parameter():
    net = DiffusionUNet(tiny_config(1, 32, num_classes=4))
    # Zero-initialised output layers would block every gradient upstream of them; perturb them first so
    # the test checks the graph, not the initialisation.
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    labels = torch.tensor([0, 1, 4, 2])  # includes the null class 4
    output = net(torch.randn(4, 1, 32, 32), torch.tensor([1, 10, 100, 999]), labels)
    output.square().mean().backward()
    for name, parameter in net.named_parameters():
        if "label_embedding" in name:
            used = torch.zeros(5, dtype=torch.bool)
            used[labels] = True
            assert bool((parameter.grad[used].abs().sum(1) > 0).all()), name
        else:
            assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0, name


def test_seed_network_gradients():
    net = DiffusionUNet(seed_unet_config(1, 0, image_size=32))
    with torch.no_grad():
        for parameter in net.head.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    net(torch.randn(2, 1, 32, 32), torch.tensor([3, 600])).square().mean().backward()
    assert all(float(p.grad.abs().sum()) > 0 for p in net.parameters())


def test_null_label():
    net = DiffusionUNet(tiny_config(1, 32, num_classes=10))
    assert net.null_label == 10
    with torch.no_grad():  # move the zero-initialised layers so the label can show in the output
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    net.eval()
    x_t, t = torch.randn(2, 1, 32, 32), torch.tensor([500, 500])
    with torch.no_grad():
        unconditional = net(x_t, t, None)
        null = net(x_t, t, torch.tensor([10, 10]))
        conditional = net(x_t, t, torch.tensor([3, 3]))
    assert torch.allclose(unconditional, null)  # no labels means the null class
    # The label must matter (not just by rounding): a substantial relative change of the output.
    assert (conditional - null).abs().mean() > 1e-2 * null.abs().mean()
    with pytest.raises(ValueError, match="labels"):
        net(x_t, t, torch.tensor([11, 0]))


def test_label_embedding_and_dropout():
    embedding = LabelEmbedding(5, 8)
    assert embedding.null_index == 5
    assert embedding.null_labels(3).tolist() == [5, 5, 5]
    assert embedding(torch.tensor([0, 5])).shape == (2, 8)
    labels = torch.arange(1000) % 5
    dropped = drop_labels(labels, 5, 0.3, torch.Generator().manual_seed(0))
    fraction = (dropped == 5).float().mean().item()
    assert 0.25 < fraction < 0.35
    kept = dropped != 5
    assert torch.equal(dropped[kept], labels[kept])
    assert torch.equal(drop_labels(labels, 5, 0.0), labels)


def test_embeddings():
    embedding = timestep_embedding(torch.tensor([0, 1, 500]), 32)
    assert embedding.shape == (3, 32)
    assert torch.allclose(embedding[0, :16], torch.ones(16)) and torch.allclose(embedding[0, 16:], torch.zeros(16))
    assert timestep_embedding(torch.tensor([3]), 33).shape == (1, 33)
    seed = seed_noise_embedding(torch.tensor([0.0, 0.5]))
    assert seed.shape == (2, 32)
    # Seed 000 eq. 15: [sin(2 pi f x), cos(2 pi f x)] with 16 frequencies from 1 to 1000.
    frequencies = torch.logspace(0, 3, 16, dtype=torch.float64)
    assert torch.allclose(seed[1, :16].double(), torch.sin(2 * torch.pi * frequencies * 0.5), atol=1e-3)
    assert torch.allclose(seed[0, 16:], torch.ones(16))


def test_conditioning_errors():
    image_net = DiffusionUNet(tiny_config(3, 32, cond_channels=3))
    with pytest.raises(ValueError, match="condition image"):
        image_net(torch.randn(1, 3, 32, 32), torch.tensor([1]), None)
    plain = DiffusionUNet(tiny_config(3, 32))
    with pytest.raises(ValueError, match="unconditional"):
        plain(torch.randn(1, 3, 32, 32), torch.tensor([1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="divisible"):
        plain(torch.randn(1, 3, 28, 28), torch.tensor([1]))


def test_config_validation_names_the_key():
    with pytest.raises(GenlabError, match="unet.norm"):
        DiffusionUNet(dataclasses.replace(tiny_config(1, 32), norm="layer"))
    with pytest.raises(GenlabError, match="attention_resolutions"):
        DiffusionUNet(dataclasses.replace(tiny_config(1, 32), attention_resolutions=(12,)))
    with pytest.raises(GenlabError, match="not both"):
        DiffusionUNet(tiny_config(1, 32, num_classes=3, cond_channels=1))


def test_presets():
    config = quick_unet_config(1, 28)  # 28 px: three levels, a 7 px bottleneck
    assert config.channel_mults == (1, 1, 2) and config.attention_resolutions == (7,)
    assert DiffusionUNet(dataclasses.replace(config, base_width=8, attention_heads=2))(
        torch.randn(1, 1, 28, 28), torch.tensor([3])
    ).shape == (1, 1, 28, 28)
    paper = ddpm_unet_config(3, 32)
    assert paper.base_width == 128 and paper.channel_mults == (1, 2, 2, 2) and paper.attention_resolutions == (16,)
    paper.validate()
    quick = quick_unet_config(1, 32)
    assert quick.channel_mults == (1, 1, 2, 4) and quick.attention_resolutions == (8, 4)
    count = sum(p.numel() for p in DiffusionUNet(quick).parameters())
    assert 900_000 < count < 3_000_000


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_self_attention_is_softmax_attention_over_pixels(layout):
    from genlab.nn.diffusion_unet import SelfAttention

    attention = SelfAttention(channels=8, heads=2, norm="group")
    torch.nn.init.normal_(attention.out.weight)  # the output conv starts at zero; make it count
    x = torch.randn(3, 8, 4, 5).contiguous(memory_format=layout)
    # the textbook form: per head, softmax(q k^T / sqrt(d)) v over the 20 pixels, with 1x1 convs as projections
    q, k, v = attention.qkv(attention.norm(x)).double().reshape(3, 3, 2, 4, 20).unbind(1)  # each (B, heads, d, HW)
    weights = torch.softmax(q.transpose(-1, -2) @ k / 2.0, dim=-1)  # (B, heads, HW, HW), sqrt(d) = 2
    attended = (v @ weights.transpose(-1, -2)).reshape(3, 8, 4, 5).float()
    expected = x + attention.out(attended)
    torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["preact", "seed"])
def test_residual_block_in_place_passes_match_the_formula_with_and_without_gradients(kind):
    """The block writes its activations and sums in place for speed; its values and its gradients must be
    those of the out-of-place formula, in training (autograd) and in sampling (no_grad)."""
    import torch.nn.functional as F

    from genlab.nn.diffusion_unet import ResidualBlock

    config = dataclasses.replace(tiny_config(1, 32), residual_block=kind, norm="group")
    block = ResidualBlock(8, 16, 12, config)
    torch.nn.init.normal_(block.conv2.weight)  # the preact block's second conv starts at zero
    x, embedding = torch.randn(2, 8, 6, 6, requires_grad=True), torch.randn(2, 12, requires_grad=True)

    def formula(x, embedding):
        first = F.silu(block.norm1(x)) if kind == "preact" else block.norm1(x)
        hidden = block.conv1(first) + block.embedding(F.silu(embedding))[:, :, None, None]
        return block.skip(x) + block.conv2(F.silu(block.norm2(hidden)))

    expected = formula(x, embedding)
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, embedding, *block.parameters()])
    got = block(x, embedding)
    got_grads = torch.autograd.grad(got.square().sum(), [x, embedding, *block.parameters()])
    torch.testing.assert_close(got, expected)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        torch.testing.assert_close(got_grad, expected_grad)
    with torch.no_grad():
        x_before = x.detach().clone()
        torch.testing.assert_close(block(x, embedding), expected.detach())
        torch.testing.assert_close(x, x_before)  # the input is never written


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shape", [(2, 5, 4, 4), (1, 3, 3, 6), (2, 4, 1, 1)])
def test_folded_upsample_conv_is_nearest_upsampling_then_the_3x3_conv(layout, shape):
    """The sub-pixel form of upsample + conv: the same values and the same gradients (input, weight, bias) as
    F.interpolate(nearest) then F.conv2d(padding 1), in float64, in either memory format (kept at the output)."""
    import torch.nn.functional as F

    from genlab.nn.diffusion_unet import Upsample, nearest_upsample_conv

    x = torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    weight = torch.randn(7, shape[1], 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True)
    expected = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), weight, bias, padding=1)
    got = nearest_upsample_conv(x, weight, bias)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    if layout == torch.channels_last and shape[2] * shape[3] > 1:
        assert got.is_contiguous(memory_format=torch.channels_last)
    upstream = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [x, weight, bias], upstream)
    got_grads = torch.autograd.grad(got, [x, weight, bias], upstream)
    for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nearest_upsample_conv(x, weight, None), expected - bias[:, None, None])
    module = Upsample(shape[1], "nearest-conv").double()
    reference = module.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    torch.testing.assert_close(module(x), reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("kind", ["nearest-conv", "bilinear"])
def test_upsample_with_a_skip_is_the_concatenation_and_its_gradients(layout, kind):
    """Upsample(x, skip) writes the decoder's skip beside the upsampled map: the same values as torch.cat of the
    two, and the same gradients for x, the skip and the conv, in float64 and either memory format."""
    from genlab.nn.diffusion_unet import Upsample

    module = Upsample(5, kind).double()
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    skip = torch.randn(2, 3, 6, 8, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    expected = torch.cat([module(x), skip], dim=1)
    got = module(x, skip)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    if layout == torch.channels_last and kind == "nearest-conv":
        assert got.is_contiguous(memory_format=torch.channels_last)
    inputs = [x, skip, *module.parameters()]
    upstream = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, inputs, upstream)
    got_grads = torch.autograd.grad(got, inputs, upstream)
    for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-12, atol=1e-12)


def test_upsample_with_a_skip_passes_the_skip_its_gradient_when_nothing_else_needs_one():
    """The interleave's own backward computes only the gradients asked for: with the conv frozen and x a constant,
    the skip still gets its slice of the output's gradient (and the phases none)."""
    from genlab.nn.diffusion_unet import Upsample

    module = Upsample(5, "nearest-conv").double().requires_grad_(False)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    skip = torch.randn(2, 3, 6, 8, dtype=torch.float64, requires_grad=True)
    got = module(x, skip)
    upstream = torch.randn_like(got)
    (grad_skip,) = torch.autograd.grad(got, [skip], upstream)
    torch.testing.assert_close(grad_skip, upstream[:, 5:], rtol=0, atol=0)
