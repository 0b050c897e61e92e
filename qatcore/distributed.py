"""Data-parallel training with ``torch.distributed``: the same run on several processes.

Under ``torchrun`` (or any launcher that sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``), each
process trains a replica wrapped in ``DistributedDataParallel`` (gloo on the CPU, nccl on GPUs)
on its shard of every global batch. The shards come from a ``DistributedSampler`` laid over the
epoch's shuffled order, so rank ``r`` takes positions ``r, r + W, r + 2W, …`` of it, and local
batch ``k`` of all ranks together is exactly global batch ``k`` of a one-process run. DDP
averages the ranks' gradients, so when ``W`` divides the global batch ``B`` and ``B`` divides the
number of examples, ``W`` processes on ``B/W`` examples each take the same steps as one process on
``B`` (up to float rounding in the reduction). Batch norm statistics stay per process, as in any
DDP run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data.distributed import DistributedSampler


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_from_environment() -> bool:
    """Join the process group a launcher describes in the environment; False when there is none."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return is_distributed()
    backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend)
    return True


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK`` from the launcher; 0 without one)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_device(name: str = "auto") -> torch.device:
    """The device this process trains on: ``auto`` picks GPU ``LOCAL_RANK`` when there are GPUs,
    else the CPU; ``cuda`` means GPU ``LOCAL_RANK``; any other torch device name is taken as it is."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but torch sees no GPU")
        return torch.device("cuda", local_rank())
    return torch.device(name)


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that prints and writes files."""
    return not is_distributed() or dist.get_rank() == 0


def place() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` outside a process group."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def local_batch_size(batch_size: int, world: int | None = None) -> int:
    """Each process's share ``B / W`` of the global batch; ValueError unless ``W`` divides ``B``."""
    world = place()[1] if world is None else world
    if batch_size % world:
        raise ValueError(
            f"batch_size must be a multiple of the {world} processes, got {batch_size}"
        )
    return batch_size // world


def shard(
    order: torch.Tensor, batch_size: int, rank: int | None = None, world: int | None = None
) -> tuple[torch.Tensor, int]:
    """Process ``rank``'s part of an epoch's ``order`` and its local batch size ``B / W``.

    ``rank`` and ``world`` default to this process's place in the process group (0 of 1 outside one).
    """
    if world is None:
        rank, world = place()
    if world == 1:
        return order, batch_size
    batch_size = local_batch_size(batch_size, world)
    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(order)),  # type: ignore[arg-type]  # a sized sequence is all it reads
        num_replicas=world,
        rank=rank,
        shuffle=False,
    )
    return order[list(sampler)], batch_size


def wrap(model: nn.Module) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when distributed, else ``model`` itself."""
    if not is_distributed():
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None
    )


def mean(value: float) -> float:
    """The average of ``value`` over the processes (``value`` itself when not distributed)."""
    if not is_distributed():
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total) / dist.get_world_size()


@torch.no_grad()
def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every process."""
    if is_distributed():
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def gather_shards(local: torch.Tensor, total: int) -> torch.Tensor:
    """Rows ``0 … total-1`` from the processes' shards, where rank ``r`` holds rows ``r, r + W, …``
    (padded to equal length); ``local`` itself when not distributed."""
    if not is_distributed():
        return local[:total]
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.contiguous())
    return torch.stack(parts, dim=1).flatten(0, 1)[:total]


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m qatcore argv`` on ``nproc`` local processes through torchrun."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        "-m",
        "qatcore",
        *argv,
    ]
    return subprocess.run(command, check=False).returncode
