"""genlab's diffusion training step and DDIM sampling beside diffusers' UNet2DModel + DDIMScheduler, same inputs.

    python -m genlab.bench.compare_diffusers --size 32 --batch 8 --ddim-steps 20 --rounds 5

Both sides get the same U-Net layout (genlab's quick net: widths 32-32-64-128 at 32 px, one residual block per
level, attention at 8 px and below; diffusers' UNet2DModel with those block widths, `layers_per_block=1` and
attention blocks at the same levels), the same batch, the same optimiser (Adam, lr 1e-3, gradient clipping 1.0,
an EMA of the weights) and the same number of DDIM steps (eta 0). Each side runs its defaults: genlab as its
trainer attaches a model (the fused Adam step), diffusers with torch's default Adam (a per-tensor loop on the
CPU); `--fused-both` gives diffusers the fused step too, `--channels-last` puts both in channels_last. The
parameter counts and forward FLOPs of both are printed so the sizes can be checked. Rounds run A B A B (genlab,
diffusers) and the ratios are medians of the per-round ratios, so drift of a shared machine cancels.

`--layouts` times DDIM sampling only, in every layout and precision genlab offers (NCHW or channels_last, fp32
or bf16 autocast) beside diffusers in NCHW and in channels_last, all in turn in each round:

    python -m genlab.bench.compare_diffusers --layouts --batch 64 --ddim-steps 50 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from genlab.bench.speed import count_flops, interleaved, interleaved_all
from genlab.data.tasks import TaskSpec
from genlab.models import Runtime, get_model_class
from genlab.train.trainer import optimizer_kernel
from genlab.utils import format_count


def genlab_model(size: int, batch: int, channels_last: bool = False):
    """genlab's ddpm family (quick U-Net, unconditional) on (3, size, size) images, attached as the trainer
    attaches it by default (fp32, its `train.fused_optimizer=auto` kernel)."""
    model_class = get_model_class("ddpm")
    config = model_class.config_class(warmup_steps=1)
    spec = TaskSpec("bench", "labelled", size, 3, 3)
    model = model_class.build(config, spec)
    device = torch.device("cpu")
    model.attach(Runtime(device, channels_last=channels_last, optimizer_kernel=optimizer_kernel("auto", device)))
    return model


def diffusers_unet(size: int, widths: tuple[int, ...], attention_sizes: tuple[int, ...]):
    """diffusers' UNet2DModel with genlab's level widths, one block per level and attention at the same sizes."""
    from diffusers import UNet2DModel

    sizes = [size // 2**level for level in range(len(widths))]
    down = tuple("AttnDownBlock2D" if s in attention_sizes else "DownBlock2D" for s in sizes)
    up = tuple("AttnUpBlock2D" if s in attention_sizes else "UpBlock2D" for s in reversed(sizes))
    return UNet2DModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        block_out_channels=widths,
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=8,
        attention_head_dim=16,
    )


def genlab_ddim(model, batch: int, steps: int, bf16: bool = False):
    """One DDIM (eta 0) sampling of a batch with genlab's model, fp32 or in bf16 autocast, as a timed action."""

    def run() -> None:
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            model.sample(batch, generator=torch.Generator().manual_seed(0), sampler="ddim", steps=steps)

    return run


def diffusers_ddim(unet, batch: int, size: int, steps: int, memory_format: torch.memory_format):
    """The same with diffusers' UNet2DModel in its DDIMScheduler loop (eta 0), as a timed action."""
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)

    @torch.no_grad()
    def run() -> None:
        ddim.set_timesteps(steps)
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        x = x.contiguous(memory_format=memory_format)
        for t in ddim.timesteps:
            x = ddim.step(unet(x, t).sample, t, x, eta=0.0).prev_sample

    return run


def sampling_layouts(size: int, batch: int, steps: int, rounds: int) -> None:
    """Print each genlab layout and precision's DDIM sampling rate over diffusers' in NCHW and channels_last."""
    torch.manual_seed(0)
    genlab_nets = {layout: genlab_model(size, batch, layout == "channels_last") for layout in ("NCHW", "channels_last")}
    unet_config = genlab_nets["NCHW"].network.config
    diffusers_nets = {}
    for layout, memory_format in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
        unet = diffusers_unet(size, unet_config.widths, unet_config.attention_resolutions).eval()
        diffusers_nets[layout] = (unet.to(memory_format=memory_format), memory_format)
    actions = {}
    for layout, model in genlab_nets.items():
        model.eval()
        for precision in ("fp32", "bf16"):
            actions[f"genlab {layout} {precision}"] = genlab_ddim(model, batch, steps, bf16=precision == "bf16")
    for layout, (unet, memory_format) in diffusers_nets.items():
        actions[f"diffusers {layout} fp32"] = diffusers_ddim(unet, batch, size, steps, memory_format)
    print(f"DDIM-{steps} sampling, {size} px, batch {batch}, {torch.get_num_threads()} CPU threads, {rounds} rounds")
    times = interleaved_all(actions, rounds)
    references = {layout: times[f"diffusers {layout} fp32"] for layout in diffusers_nets}
    for name, seconds in times.items():
        ratios = ", ".join(
            f"{statistics.median(b / a for a, b in zip(seconds, reference)):.2f}x diffusers {layout}'s"
            for layout, reference in references.items()
        )
        print(f"{name:<28} {statistics.median(seconds):.3f} s/batch, {batch / statistics.median(seconds):.1f} "
              f"images/s: rate {ratios}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ddim-steps", type=int, default=20)
    parser.add_argument("--train-steps", type=int, default=5, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fused-both", action="store_true", help="diffusers' Adam uses the fused step too")
    parser.add_argument("--channels-last", action="store_true", help="both U-Nets and their inputs in channels_last")
    parser.add_argument(
        "--layouts", action="store_true", help="DDIM sampling only: every genlab layout and precision beside diffusers'"
    )
    args = parser.parse_args(argv)
    if args.layouts:
        sampling_layouts(args.size, args.batch, args.ddim_steps, args.rounds)
        return 0
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    model = genlab_model(args.size, args.batch, args.channels_last)
    unet_config = model.network.config
    unet = diffusers_unet(args.size, unet_config.widths, unet_config.attention_resolutions)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    unet.to(memory_format=layout)
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-3, fused=True if args.fused_both else None)
    ema = EMAModel(unet.parameters(), decay=0.999)
    train_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    images = (torch.rand(args.batch, 3, args.size, args.size) * 2 - 1).contiguous(memory_format=layout)

    def genlab_train() -> None:
        for _ in range(args.train_steps):
            model.training_step({"image": images})
            model.end_step()

    def diffusers_train() -> None:
        for _ in range(args.train_steps):
            noise = torch.randn_like(images)
            t = torch.randint(0, 1000, (args.batch,))
            noisy = train_scheduler.add_noise(images, noise, t)
            loss = F.mse_loss(unet(noisy, t).sample, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            ema.step(unet.parameters())

    genlab_sample = genlab_ddim(model, args.batch, args.ddim_steps)
    diffusers_sample = diffusers_ddim(unet, args.batch, args.size, args.ddim_steps, layout)

    t0 = torch.zeros(args.batch, dtype=torch.long)
    with torch.no_grad():
        flops_genlab = count_flops(lambda: model.network(images, t0))
        flops_diffusers = count_flops(lambda: unet(images, t0))
    params_genlab = sum(p.numel() for p in model.network.parameters())
    params_diffusers = sum(p.numel() for p in unet.parameters())
    print(
        f"{args.size} px, batch {args.batch}, {torch.get_num_threads()} CPU threads; U-Net widths {unet_config.widths}"
        f", attention at {unet_config.attention_resolutions} px; Adam kernels: genlab "
        f"{model.runtime.optimizer_kernel}, diffusers {'fused' if args.fused_both else 'torch default'}; "
        f"{'channels_last' if args.channels_last else 'NCHW'}"
    )
    sizes = (("genlab", params_genlab, flops_genlab), ("diffusers", params_diffusers, flops_diffusers))
    for name, params, flops in sizes:
        print(f"{name:<9} U-Net: {format_count(params)} parameters, {flops / 1e9:.2f} GFLOP per forward")
    model.train()
    unet.train()
    train_a, train_b = interleaved(genlab_train, diffusers_train, args.rounds)
    model.eval()
    unet.eval()
    sample_a, sample_b = interleaved(genlab_sample, diffusers_sample, args.rounds)
    for name, times_a, times_b, per, count in (
        ("training step", train_a, train_b, "step", args.train_steps),
        (f"DDIM-{args.ddim_steps} sampling", sample_a, sample_b, "batch", 1),
    ):
        ratio = statistics.median(b / a for a, b in zip(times_a, times_b))
        print(
            f"{name:<20} genlab {statistics.median(times_a) / count:.4f} s/{per}, "
            f"diffusers {statistics.median(times_b) / count:.4f} s/{per}: genlab's rate = {ratio:.2f}x diffusers' "
            f"(per FLOP {ratio * flops_diffusers / flops_genlab:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
