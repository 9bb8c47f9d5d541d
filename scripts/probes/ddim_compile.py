"""Probe (issue 11): does torch.compile (inductor) make genlab's DDIM sampling faster on this CPU?

The quick U-Net of `genlab.bench.compare_diffusers` (unconditional, 32 px) samples a batch with DDIM (eta 0) in
eager mode and compiled (`module.compile()` on the sampling network, as `train.compile` does; `--freezing` also
turns on inductor's weight freezing, which folds and prepacks the convolution weights for oneDNN). The first
compiled call, which includes compiling, is timed on its own; then rounds run A B A B and the ratio is the
median of the per-round eager/compiled ratios. Not a sampler option: on the 2-core machine it was run on,
compiled sampling was slower than eager either way (README, "Speed and scale").

    python scripts/probes/ddim_compile.py --batch 64 --steps 50 --rounds 3 [--freezing]
"""

from __future__ import annotations

import argparse
import statistics
import time

from genlab.bench.compare_diffusers import genlab_ddim, genlab_model


def seconds(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--freezing", action="store_true", help="inductor's weight freezing (inference only)")
    args = parser.parse_args(argv)
    import torch._inductor.config as inductor

    inductor.freezing = args.freezing
    eager_model = genlab_model(args.size, args.batch)
    compiled_model = genlab_model(args.size, args.batch)
    compiled_model.load_state_dict(eager_model.state_dict())
    compiled_model.ema_network.compile()
    eager = genlab_ddim(eager_model, args.batch, args.steps)
    compiled = genlab_ddim(compiled_model, args.batch, args.steps)
    eager()  # warm-up: oneDNN's kernel choice, allocations
    print(f"first compiled sampling (compiling included): {seconds(compiled):.1f} s", flush=True)
    ratios = []
    for round_index in range(args.rounds):
        eager_seconds, compiled_seconds = seconds(eager), seconds(compiled)
        ratios.append(eager_seconds / compiled_seconds)
        print(f"round {round_index + 1}: eager {eager_seconds:.2f} s, compiled {compiled_seconds:.2f} s", flush=True)
    print(f"compiled speed over eager (median of {args.rounds} rounds, freezing={args.freezing}): "
          f"{statistics.median(ratios):.3f}x")


if __name__ == "__main__":
    main()
