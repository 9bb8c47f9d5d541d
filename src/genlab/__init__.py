"""genlab: train, sample, evaluate and compare generative image models."""

__version__ = "0.1.0"


def load(run_dir, device: str = "auto", checkpoint: str | None = None, precision: str = "fp32"):
    """Load the trained model of a run directory, ready for `translate(...)` or `sample(...)`; `precision`
    fp32, bf16 (CUDA or CPU), fp16 (CUDA) or auto is the autocast of its forward passes.

    >>> model = genlab.load("runs/pix2pix")          # doctest: +SKIP
    >>> photo = model.translate(label_map_pil)       # doctest: +SKIP
    """
    from genlab.api import load_run

    return load_run(run_dir, device=device, checkpoint=checkpoint, precision=precision).model


__all__ = ["__version__", "load"]
