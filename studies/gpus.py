"""Which GPU each local worker of `study run --workers N` trains on.

A machine with several GPUs gives each worker its own: the worker process starts with
CUDA_VISIBLE_DEVICES naming one GPU, so torch in it sees exactly that one as cuda:0 (the
variable is read when CUDA starts, and the spawned worker has not imported torch yet). More
workers than GPUs is refused unless the user asks them to share (`--share-gpus`: round robin),
because two trainings on one GPU are each slower and can run out of its memory. Workers of a
study whose `train.accelerator` is "cpu", or on a machine without a GPU, are left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from foundation.errors import AmpStudyError

VISIBLE = "CUDA_VISIBLE_DEVICES"


def visible_gpus(environ: Mapping[str, str] = os.environ, count: int | None = None) -> list[str]:
    """The GPUs this process may hand out, as CUDA_VISIBLE_DEVICES entries: `count` (default
    torch.cuda.device_count(), 0 without a CUDA build or driver) of them, named by this process's own
    CUDA_VISIBLE_DEVICES (indices or UUIDs) when it is set, else 0..count-1."""
    if count is None:
        import torch

        count = torch.cuda.device_count()
    if VISIBLE in environ:  # CUDA uses the entries up to the first one that names no device
        return [d.strip() for d in environ[VISIBLE].split(",") if d.strip()][:count]
    return [str(i) for i in range(count)]


def assign_gpus(workers: int, gpus: list[str], share: bool = False) -> list[str | None]:
    """Per worker, the value of its CUDA_VISIBLE_DEVICES (None: leave the environment as it is)."""
    if not gpus:
        return [None] * workers
    if workers > len(gpus) and not share:
        raise AmpStudyError(
            f"--workers {workers} but this machine has {len(gpus)} GPU(s) ({VISIBLE}={','.join(gpus)}): each "
            f"worker gets its own GPU; use --workers {len(gpus)}, or --share-gpus to run "
            f"{-(-workers // len(gpus))} workers per GPU")
    return [gpus[i % len(gpus)] for i in range(workers)]


def describe(assignment: list[str | None]) -> str:
    """e.g. 'workers 0, 1 on GPU 0; 2, 3 on GPU 1' ('' when no GPU is assigned)."""
    by_gpu: dict[str, list[int]] = {}
    for worker, gpu in enumerate(assignment):
        if gpu is not None:
            by_gpu.setdefault(gpu, []).append(worker)
    return "; ".join(f"{'workers' if len(ws) > 1 else 'worker'} {', '.join(map(str, ws))} on GPU {gpu}"
                     for gpu, ws in by_gpu.items())


@contextmanager
def child_environment(name: str, value: str | None) -> Iterator[None]:
    """os.environ[name] = value while a child process is started (it copies the environment then)."""
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
