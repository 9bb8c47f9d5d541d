import pytest
import torch
import torch.nn.functional as F

from genlab.data.tasks import TaskSpec
from genlab.models import get_model_class
from genlab.models.losses import GANLoss, gaussian_kl
from genlab.nn.patchgan import PatchDiscriminator, patchgan_receptive_field
from genlab.nn.unet import UNetGenerator, unet_depth
from genlab.runs import build_run_config
from genlab.utils import GenlabError


@pytest.mark.parametrize("size, depth", [(32, 5), (64, 6), (128, 7), (256, 8)])
def test_unet_depth_follows_size_to_a_1x1_bottleneck(size, depth):
    assert unet_depth(size) == depth
    net = UNetGenerator(3, 3, depth, width=4)
    codes = []
    net.encoder[-1].register_forward_hook(lambda module, inputs, output: codes.append(output))
    output = net(torch.randn(1, 3, size, size))
    assert output.shape == (1, 3, size, size)
    assert codes[0].shape[-2:] == (1, 1)
    assert output.abs().max() <= 1.0  # Tanh


def test_unet_paper_layout_at_256():
    net = UNetGenerator(3, 3, 8, width=64)
    widths = [block[-2 if i not in (0, 7) else -1].out_channels for i, block in enumerate(net.encoder)]
    assert widths == [64, 128, 256, 512, 512, 512, 512, 512]  # C64-C128-C256-C512x5
    dropouts = [any(isinstance(m, torch.nn.Dropout) for m in block) for block in net.decoder]
    assert dropouts == [False, True, True, True, False, False, False, False]  # as the reference U-Net
    innermost = UNetGenerator(3, 3, 8, width=8, dropout_blocks=3)
    assert [any(isinstance(m, torch.nn.Dropout) for m in block) for block in innermost.decoder][:4] == [
        True, True, True, False
    ]
    small = UNetGenerator(3, 3, 5, width=8)  # 32 px: the reference has no dropout there
    assert not any(isinstance(m, torch.nn.Dropout) for m in small.modules())


def test_unet_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="power-of-two"):
        unet_depth(48)


def test_unet_skips_carry_fine_detail():
    """Each output pixel depends on the input pixel at the same place through the outermost skip."""
    net = UNetGenerator(1, 1, 4, width=4, dropout_blocks=0).eval()
    source = torch.zeros(1, 1, 16, 16, requires_grad=True)
    net(source)[0, 0, 5, 9].backward()
    assert source.grad[0, 0, 5, 9] != 0


def test_patchgan_receptive_field_is_70():
    assert patchgan_receptive_field(3) == 70
    # Independent check: the gradient of one output logit is nonzero exactly on a 70x70 input window.
    net = PatchDiscriminator(1, width=4, layers=3, norm="none")
    torch.nn.init.constant_(net.net[-1].weight, 1.0)
    for layer in net.modules():
        if isinstance(layer, torch.nn.Conv2d):
            torch.nn.init.constant_(layer.weight, 0.01)
    net.eval()
    images = torch.ones(1, 1, 160, 160, requires_grad=True)
    logits = net(images)
    logits[0, 0, logits.shape[2] // 2, logits.shape[3] // 2].backward()
    rows = torch.nonzero(images.grad[0, 0].abs().sum(dim=1)).flatten()
    columns = torch.nonzero(images.grad[0, 0].abs().sum(dim=0)).flatten()
    assert rows.max() - rows.min() + 1 == 70 and columns.max() - columns.min() + 1 == 70


def test_gan_losses_match_closed_forms():
    logits = torch.tensor([-2.0, 0.0, 3.0])
    vanilla = GANLoss("vanilla")
    assert torch.isclose(vanilla(logits, real=True), -F.logsigmoid(logits).mean())
    assert torch.isclose(vanilla(logits, real=False), -F.logsigmoid(-logits).mean())
    lsgan = GANLoss("lsgan")
    assert torch.isclose(lsgan(logits, real=True), ((logits - 1) ** 2).mean())
    assert torch.isclose(lsgan(logits, real=False), (logits**2).mean())
    hinge = GANLoss("hinge")
    assert torch.isclose(hinge(logits, real=True), torch.tensor((3.0 + 1.0 + 0.0) / 3))
    assert torch.isclose(hinge(logits, real=False, for_discriminator=False), -logits.mean())


def test_gaussian_kl_matches_closed_form():
    mu, logvar = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.2, -0.3]])
    var = logvar.exp()
    expected = 0.5 * (var + mu**2 - 1 - logvar).sum()
    assert torch.isclose(gaussian_kl(mu, logvar), expected)
    assert gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)) == 0


def _model(gan_loss="vanilla", size=32):
    config = build_run_config("pix2pix", "quick", {}, [f"net.gan_loss={gan_loss}", "net.width=8"]).net
    return get_model_class("pix2pix").build(config, TaskSpec("t", "paired", size, 3, 3))


@pytest.mark.parametrize("gan_loss", ["vanilla", "lsgan"])
def test_training_step_updates_both_nets_with_finite_losses(gan_loss):
    torch.manual_seed(0)
    model = _model(gan_loss)
    batch = {"source": torch.rand(2, 3, 32, 32) * 2 - 1, "target": torch.rand(2, 3, 32, 32) * 2 - 1}
    before = {name: [p.clone() for p in module.parameters()] for name, module in model.named_children()}
    losses = model.training_step(batch)
    assert set(losses) >= {"loss_g", "loss_g_gan", "loss_g_l1", "loss_d"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert losses["loss_g"] == pytest.approx(losses["loss_g_gan"] + 100 * losses["loss_g_l1"], rel=1e-5)
    for name, module in model.named_children():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters())), name
    assert all(p.requires_grad for p in model.discriminator.parameters())  # unfrozen after the G step


def test_translate_accepts_pil_single_tensor_and_batch():
    from PIL import Image

    model = _model()
    picture = Image.new("RGB", (50, 40), (200, 10, 10))
    output = model.translate(picture)
    assert isinstance(output, Image.Image) and output.size == (50, 40)  # back at the input size, as the CLI does
    assert model.translate(torch.full((3, 32, 32), -0.5)).shape == (3, 32, 32)
    batch = model.translate(torch.zeros(4, 3, 32, 32, dtype=torch.uint8))
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == torch.uint8
    grey = torch.full((3, 32, 32), -0.5)
    assert torch.equal(model.translate(grey.expand(2, -1, -1, -1))[0], model.translate(grey))


def test_quick_preset_translates_each_image_as_it_would_alone():
    """The quick preset's batch norm is scored in eval mode: an output depends on its own input only, through the
    running statistics training gathered, not on the other images of the batch."""
    torch.manual_seed(0)
    model = _model()
    norms = [m for m in model.generator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms, "the quick preset's generator uses batch norm"
    batch = {"source": torch.rand(4, 3, 32, 32) * 2 - 1, "target": torch.rand(4, 3, 32, 32) * 2 - 1}
    for _ in range(2):
        model.training_step(batch)
    assert any(not torch.equal(norm.running_var, torch.ones_like(norm.running_var)) for norm in norms)
    sources = torch.rand(3, 3, 32, 32) * 2 - 1
    together = model.translate_batch(sources)
    alone = torch.cat([model.translate_batch(source[None]) for source in sources])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    assert model.generator.training  # translating left training mode as it was


def test_pix2pix_refuses_unpaired_tasks():
    config = build_run_config("pix2pix").net
    with pytest.raises(GenlabError, match="does not support labelled tasks"):
        get_model_class("pix2pix").build(config, TaskSpec("fashion-mnist", "labelled", 32, 1, 1, 10))


@pytest.mark.parametrize("size, layers", [(16, 2), (24, 3), (32, 3), (256, 3)])
def test_patchgan_shrinks_only_for_tiny_images(size, layers):
    from genlab.nn.patchgan import max_patchgan_layers

    assert min(3, max_patchgan_layers(size)) == layers
    net = PatchDiscriminator(6, width=4, layers=layers).train()
    assert net(torch.zeros(2, 6, size, size)).shape[-1] >= 1  # instance norm saw > 1 pixel everywhere


@pytest.mark.parametrize(
    "size, layers", [(24, 1), (32, 1), (33, 1), (34, 2), (64, 2), (69, 2), (70, 3), (128, 3), (256, 3)]
)
def test_default_patchgan_is_the_deepest_whose_patch_fits_in_the_image(size, layers):
    """disc_layers=None: 16x16 patches at 32 px, 34x34 at 64 px, the paper's 70x70 from 70 px up, each no larger
    than the image; the built discriminator has that many stride-2 convs, and an explicit depth is kept."""
    from genlab.nn.patchgan import fitting_patchgan_layers

    assert fitting_patchgan_layers(size) == layers
    assert patchgan_receptive_field(layers) <= size < patchgan_receptive_field(layers + 1) or layers == 3
    if size & (size - 1):
        return  # the U-Net generator takes powers of two only
    spec = TaskSpec("facades-synth", "paired", size, 3, 3)

    def halvings(values: dict) -> int:  # the first conv and each block but the last halve the map
        model = get_model_class("pix2pix").build(build_run_config("pix2pix", values=values).net, spec)
        return [m.stride[0] for m in model.discriminator.modules() if isinstance(m, torch.nn.Conv2d)].count(2)

    assert halvings({}) == layers
    assert halvings({"net.disc_layers": 3}) == 3  # an explicit depth is kept (3 blocks fit from 24 px)


def test_generator_average_is_the_power_ema_of_weights_and_norm_statistics_and_translates():
    """net.ema_length keeps the power-function average of the generator (EDM2's profile): after n updates it is
    sum_i w_i theta_i with w_i = (1 - d_i) prod_{j > i} d_j, d_i = (i / (i + 1))^(gamma + 1), for the weights and
    batch norm's running statistics alike; translation uses it, training leaves the trained generator as it was."""
    from genlab.nn.ema import power_ema_decay, power_ema_gamma

    torch.manual_seed(0)
    config = build_run_config("pix2pix", "quick", {}, ["net.width=8", "net.ema_length=0.15"]).net
    model = get_model_class("pix2pix").build(config, TaskSpec("t", "paired", 32, 3, 3))
    assert model.ema_generator is not None and not any(p.requires_grad for p in model.ema_generator.parameters())
    history = []
    for _ in range(4):
        batch = {"source": torch.rand(4, 3, 32, 32) * 2 - 1, "target": torch.rand(4, 3, 32, 32) * 2 - 1}
        model.training_step(batch)
        model.end_step()  # the trainer's: advances the step count the decay reads
        history.append({key: value.clone() for key, value in model.generator.state_dict().items()})
    gamma = power_ema_gamma(0.15)
    decays = [power_ema_decay(i, gamma) for i in range(len(history))]
    weights = [(1 - decays[i]) * torch.tensor(decays[i + 1 :], dtype=torch.float64).prod().item()
               for i in range(len(history))]
    assert decays[0] == 0 and sum(weights) == pytest.approx(1.0)  # the first update copies: no initial weights
    averaged = model.ema_generator.state_dict()
    for key, value in averaged.items():
        if value.is_floating_point():
            expected = sum(w * snapshot[key].double() for w, snapshot in zip(weights, history))
            torch.testing.assert_close(value.double(), expected, rtol=0, atol=1e-6, msg=key)
        else:
            assert torch.equal(value, history[-1][key]), key  # batch norm's step count is copied
    assert any("running_mean" in key for key in averaged)
    assert any(not torch.equal(value, history[-1][key]) for key, value in averaged.items())  # not the last weights
    source = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = model.ema_generator.eval()(source)
        last = model.generator.eval()(source)
    model.generator.train()
    torch.testing.assert_close(model.translate_batch(source), expected)
    assert not torch.allclose(expected, last, atol=1e-4)
    assert model.generator.training  # translating with the average leaves the trained generator alone


def test_without_ema_length_there_is_no_average():
    config = build_run_config("pix2pix", "quick", {}, ["net.width=8", "net.ema_length=null"]).net
    model = get_model_class("pix2pix").build(config, TaskSpec("t", "paired", 32, 3, 3))
    assert model.ema_generator is None
    assert not any(key.startswith("ema_") for key in model.state_dict())
