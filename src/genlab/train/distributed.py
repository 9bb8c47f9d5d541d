"""Multi-process launch detection. Multi-GPU training through Accelerate is planned (DESIGN.md section 6)."""

from __future__ import annotations

import os

from genlab.utils import GenlabError


def require_single_process() -> None:
    """A multi-process launch (WORLD_SIZE > 1) is refused clearly for now, rather than letting every process
    train its own copy of the model."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return
    raise GenlabError(
        f"this run was launched with WORLD_SIZE={world_size}: multi-process training is not supported yet; "
        "run a single process (it uses the GPU when one is present)"
    )
