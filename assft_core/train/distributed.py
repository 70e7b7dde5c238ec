"""Process-group helpers for `torchrun` (torch.distributed): one code path, one or many processes.

Under `torchrun` (or any launcher that sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and
`MASTER_PORT`) `init_distributed` joins the process group: NCCL when the ranks train on CUDA, gloo
on CPU. Without a launcher it is a no-op and every helper behaves as a world of one process, so
the trainer and the scoring pass need no branch for the single-process case (docs/architecture.md,
"One process or many").

Each rank of a node drives the GPU of its `LOCAL_RANK`; a CPU rank uses the CPU.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from assft_core.errors import AssftError
from assft_core.models.inference import resolve_device

T = TypeVar("T")

# Environment variables a torchrun launcher sets on every worker.
_LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(AssftError):
    """The process group cannot be set up as launched (names the launcher setting to fix)."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job.

    Attributes:
        rank: global rank, 0..world_size−1 (0 without a launcher).
        world_size: number of processes over all nodes (1 without a launcher).
        local_rank: rank on this node; picks the GPU (0 without a launcher).
        device: the device this rank computes on.
        backend: "nccl", "gloo", or "none" for a single process.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that writes checkpoints, tables and progress."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the launcher's environment variables are present with `WORLD_SIZE` > 1."""
    return all(k in os.environ for k in _LAUNCHER_ENV) and int(os.environ["WORLD_SIZE"]) > 1


def rank_device(device: str = "auto") -> torch.device:
    """The device of this rank for a device setting.

    Single process: `resolve_device(device)`. Under a launcher, "auto" and "cuda" mean the GPU of
    `LOCAL_RANK` (CUDA when present, else CPU for "auto").

    Args:
        device: "auto", "cpu", "cuda" or "cuda:i".

    Raises:
        DistributedError: "cuda:i" under a launcher (every rank would share GPU i); or more ranks
            on this node than visible GPUs.
        AssftError: CUDA asked for but not available.
    """
    base = resolve_device(device)
    if not launched_by_torchrun() or base.type != "cuda":
        return base
    if device not in ("auto", "cuda"):
        raise DistributedError(
            f"device {device!r} pins every rank to one GPU. Fix: use device 'auto' or 'cuda' under "
            "torchrun; each rank then takes the GPU of its LOCAL_RANK."
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    if local_rank >= torch.cuda.device_count():
        raise DistributedError(
            f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible on "
            f"this node. Fix: --nproc_per_node ≤ {torch.cuda.device_count()}, or device 'cpu'."
        )
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto") -> DistContext:
    """Join the torchrun process group, or describe a single process when not launched.

    Idempotent: a second call returns the context of the group already joined.

    Args:
        device: the run's device setting (see `rank_device`); CUDA ranks use NCCL, CPU ranks gloo.

    Returns:
        The rank, world size, local rank, device and backend of this process.

    Raises:
        DistributedError: see `rank_device`.
    """
    dev = rank_device(device)
    if not launched_by_torchrun():
        return DistContext(rank=0, world_size=1, local_rank=0, device=dev, backend="none")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # NCCL and object collectives use the current device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ["LOCAL_RANK"]),
        device=dev,
        backend=str(dist.get_backend()),
    )


def shutdown() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes in the group (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if get_world_size() > 1:
        dist.barrier()


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Indices of `n` items owned by `rank`: i with i % world_size == rank (round-robin).

    Round-robin rather than contiguous blocks, so ranks get cases of every size and site and
    finish close together.

    Raises:
        ValueError: for a rank outside 0..world_size−1.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    return list(range(rank, n, world_size))


def broadcast_object(obj: T, src: int = 0) -> T:
    """`obj` of rank `src` on every rank (pickled; for small objects such as flags and rows)."""
    if get_world_size() == 1:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: T) -> list[T]:
    """Every rank's `obj`, indexed by rank, on every rank (pickled; small objects only)."""
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of `values` over ranks, returned as a new tensor (the input is kept).

    Args:
        values: any shape, on this rank's device (NCCL needs CUDA tensors).
    """
    out = values.clone()
    if get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of `values` over ranks, returned as a new tensor (floating point)."""
    return all_reduce_sum(values) / get_world_size()


def broadcast_module_state(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers into `module` on every rank, in place.

    After DDP training, parameters already agree; BatchNorm running statistics do not (each rank
    updates them from its own crops), so this makes every rank hold exactly what rank 0 saved.
    """
    if get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=src)


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 of `module`'s state (names, dtypes, shapes and bytes): equal digests, equal models."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        value = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
