"""Prediction started by ``torchrun``: each process joins the process group torchrun describes (only to
wait for the others at the start and the end) and takes a fair share of the CPU cores. Which inputs
each process predicts needs no talk at all: it follows from the sorted input list (inputs.py).

A process that was not started by torchrun is a world of one, and nothing here changes it."""

from __future__ import annotations

import os

import torch

from ..training.distributed import World, init_world


def process_threads(local_processes: int, cores: int | None = None) -> int:
    """The threads each of ``local_processes`` processes on one machine may use: its ``cores`` (default:
    those this process may run on, which SLURM and taskset limit) divided between them, at least one."""
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, cores // max(1, local_processes))


def join_launch() -> World:
    """This process's place among those torchrun started (a world of one without torchrun). Under
    torchrun the process also gets cores ÷ processes on its machine as its torch threads: torchrun's own
    default (OMP_NUM_THREADS=1 whenever it starts several processes) would leave most cores idle."""
    world = init_world()
    if world.distributed:
        torch.set_num_threads(process_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    return world
