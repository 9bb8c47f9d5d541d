import pytest
import torch

from genlab.nn.resnet_generator import ResidualBlock, ResnetGenerator, resnet_blocks


@pytest.mark.parametrize("size, blocks", [(16, 6), (64, 6), (128, 6), (256, 9), (512, 9)])
def test_block_count_follows_the_paper_by_size(size, blocks):
    assert resnet_blocks(size) == blocks


@pytest.mark.parametrize("in_channels, out_channels, size", [(3, 3, 16), (1, 3, 32), (3, 1, 24)])
def test_shapes_and_tanh_range(in_channels, out_channels, size):
    torch.manual_seed(0)
    net = ResnetGenerator(in_channels, out_channels, width=4, n_blocks=2)
    output = net(torch.randn(2, in_channels, size, size) * 5)
    assert output.shape == (2, out_channels, size, size)
    assert output.abs().max() <= 1.0


def test_layout_c7s1_d2k_d4k_residual_u2k_uk_c7s1():
    net = ResnetGenerator(3, 3, width=8, n_blocks=3)
    convs = [m for m in net.net if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert [(c.kernel_size[0], c.stride[0], c.out_channels) for c in convs] == [
        (7, 1, 8), (3, 2, 16), (3, 2, 32), (3, 2, 16), (3, 2, 8), (7, 1, 3)
    ]  # fmt: skip
    assert sum(isinstance(m, ResidualBlock) for m in net.net) == 3
    first_block = next(m for m in net.net if isinstance(m, ResidualBlock))
    assert isinstance(first_block.block[0], torch.nn.ReflectionPad2d)  # reflection padding inside the blocks
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules())


def test_residual_block_keeps_shape_and_adds_its_input():
    block = ResidualBlock(4)
    for parameter in block.parameters():
        torch.nn.init.zeros_(parameter)
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(block(x), x)  # zero convs: the block is the identity through its skip


def test_refuses_sides_not_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        ResnetGenerator(3, 3, width=4, n_blocks=1)(torch.zeros(1, 3, 18, 18))
