"""Prediction started by ``torchrun``: each process joins the process group torchrun describes (only to
wait for the others at the start and the end) and takes its own share of the machine's CPU cores. Which
inputs each process predicts needs no talk at all: it follows from the sorted input list (inputs.py).

A process that was not started by torchrun is a world of one, and nothing here changes it."""

from __future__ import annotations

import os

import torch

from ..training.distributed import World, init_world


def process_cores(local_rank: int, local_processes: int, cores: list[int]) -> list[int]:
    """The CPU cores of process ``local_rank`` of the ``local_processes`` on one machine: a contiguous
    block of ``cores`` (neighbouring cores share caches), the blocks as equal as they can be; where there
    are fewer cores than processes, one core each, shared in turn."""
    if len(cores) < local_processes:
        return [cores[local_rank % len(cores)]]
    size, extra = divmod(len(cores), local_processes)
    start = local_rank * size + min(local_rank, extra)
    return cores[start:start + size + (local_rank < extra)]


def join_launch() -> World:
    """This process's place among those torchrun started (a world of one without torchrun).

    Under torchrun the process is also held to its own block of the cores it may use (those SLURM or
    taskset allow), divided between the processes on its machine, and uses that many torch threads:
    torchrun's own default (OMP_NUM_THREADS=1 whenever it starts several processes) would leave most
    cores idle, and processes that each used every core would fight over them. Call it before loading
    the model: the onnx engine sizes its sessions to the cores it may use when it loads."""
    world = init_world()
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if world.distributed and hasattr(os, "sched_setaffinity"):
        cores = process_cores(world.local_rank, local_processes, _launcher_cores())
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(len(cores))
    return world


def _launcher_cores() -> list[int]:
    """The cores torchrun itself may use (this process's parent): what the machine's processes divide,
    the same however often this process joins (its own cores are already its share after the first)."""
    try:
        return sorted(os.sched_getaffinity(os.getppid()))
    except OSError:  # the parent is gone or not ours to inspect
        return sorted(os.sched_getaffinity(0))
