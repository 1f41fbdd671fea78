"""Data-parallel training on PyTorch's own machinery: processes started by ``torchrun`` (which sets
RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous), NCCL between GPUs, gloo between CPU processes.

A single process is the same code with a world of one: every helper here is then a no-op."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, checkpoints and plots."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self) -> torch.device:
        """This process's device: its own GPU under torchrun, else CUDA when present, else the CPU."""
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if self.distributed:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cuda")

    def shard(self, batch):
        """This rank's share of a global batch: every size-th item from its rank on."""
        return batch[self.rank::self.size]

    def sum(self, *values: float | int) -> list[float]:
        """Sum numbers over all ranks (exact for counts: float64)."""
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            t = t.to(_comm_device())
            dist.all_reduce(t)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one: ranks must stop (or fail) together."""
        if not self.distributed:
            return flag
        t = torch.tensor([int(flag)], device=_comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def launched_rank() -> int | None:
    """This process's rank when torchrun started it (before any process group exists), else None."""
    return int(os.environ["RANK"]) if "RANK" in os.environ else None


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def init_world() -> World:
    """Join the process group torchrun describes in the environment; a plain run is a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend)
    return world


def close_world(world: World, together: bool) -> None:
    """Leave the process group; ``together`` when every rank is leaving now (not after a failure).

    Ranks that leave together first meet at a barrier: a gloo process that tears its group down while
    rank 0 still writes the final checkpoint can abort ("terminate called without an active exception").
    """
    if world.distributed and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


class LaunchStopped(Exception):
    """Ctrl-C or SIGTERM reached a launched run: torchrun passed it on and each process saved its progress."""


class LaunchFailed(Exception):
    """Some launched training processes failed; ``codes`` are their exit codes."""

    def __init__(self, codes: list[int], nproc: int):
        self.codes = codes
        super().__init__(f"{len(codes)} of {nproc} training processes failed (exit codes {', '.join(map(str, codes))})")


def launch(nproc: int, command: list[str]) -> None:
    """Run ``pixelwise COMMAND…`` in ``nproc`` local processes, as ``torchrun --standalone
    --nproc-per-node N -m pixelwise COMMAND…`` would (PyTorch's own launcher, never a home-made one)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, not {nproc}")
    try:
        run(get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(nproc), "-m", "pixelwise", *command]))
    except SignalException:
        raise LaunchStopped() from None
    except ChildFailedError as exc:
        raise LaunchFailed([failure.exitcode for failure in exc.failures.values()], nproc) from None
