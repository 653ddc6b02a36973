"""Two small helpers every layer uses: a model in eval mode for a block, and a file written whole
or not at all. A leaf module: it imports nothing from bench, so any module (and bench.api, for
plugins) may use it."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode inside the block. Afterwards, also after an exception, every submodule
    gets its own earlier mode back, so a BN a method froze in eval stays frozen."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` in one step when the block
    ends without error, so a kill never leaves a half-written file and readers see the old or the
    new one. The name ends in `.<pid>.tmp`: two processes writing one file never share a
    temporary, and a kill -9's leftover matches no glob of the real files."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
