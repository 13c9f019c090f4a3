"""Training on several processes under ``torchrun``: the process group, who writes, DDP, the reduced loss.

``torchrun --nproc_per_node N -m ddpm_studio train …`` (or ``torchrun`` on several nodes with its
rendezvous) starts N copies of the command with RANK, WORLD_SIZE and LOCAL_RANK in their
environment. :func:`start` joins the process group (NCCL on CUDA, gloo on CPU) and returns a
:class:`Distributed` that says who this process is. A plain single process gets ``Distributed()``
(world 1), for which every method here is a no-op, so the single-process path is unchanged.

How a global batch is split: every rank draws the random numbers (timesteps, noise, label
dropout) of the *whole* global batch from the same generator and keeps its own rows,
``rank, rank + world, …``, the rows :class:`~ddpm_studio.services.batches.BatchStream` gives it.
So an N-process run sees the same samples and noise as one process with N times the batch
(it matches it up to float rounding), the generators stay identical on every rank, and rank 0's
checkpoint resumes under any world size.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the CLI asks env_rank() before any command loads torch
    import torch
    from torch import Tensor, nn

#: How long a rank waits for the others at a collective (rank 0 alone writes previews and checkpoints,
#: and decodes an image folder first while the others wait for its cache).
TIMEOUT = timedelta(minutes=30)


class DistributedError(RuntimeError):
    """The multi-process setup cannot work; the message is for the user."""


def launched_by_torchrun() -> bool:
    """True in a process that torchrun (``torch.distributed.run``) started with a world of 2 or more."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    """This process's global rank from torchrun's environment (0 when not launched by it)."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


@dataclass(frozen=True)
class Distributed:
    """Who this process is among the training processes; world 1 = a single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False  # joined by start(), so close() leaves it

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder (config, metrics, previews, checkpoints)."""
        return self.rank == 0

    def share(self, rows: Tensor) -> Tensor:
        """This rank's rows of a tensor drawn for the whole global batch (the rows BatchStream gives it)."""
        return rows if self.world == 1 else rows[self.rank :: self.world].contiguous()

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model in DistributedDataParallel (gradients averaged over ranks in backward), or itself."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def no_sync(self, net: nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        """DDP's ``no_sync`` on accumulation micro-steps but the last: gradients are all-reduced once per step."""
        if self.enabled and not last:
            return net.no_sync()  # type: ignore[operator]
        return contextlib.nullcontext()

    def sum(self, values: Tensor) -> Tensor:
        """All-reduce (sum) ``values`` in place across ranks; the same tensor back."""
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(values)
        return values

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier(device_ids=[self.local_rank] if self.backend == "nccl" else None)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (a picklable object) on every rank."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def local_main_first(self) -> Iterator[None]:
        """Local rank 0 of each node runs the block first (e.g. decodes and caches a folder), the others after it."""
        if self.enabled and self.local_rank != 0:
            self.barrier()
        yield
        if self.enabled and self.local_rank == 0:
            self.barrier()

    def rank_seed(self, seed: int, step: int) -> int:
        """A seed for this rank's own random stream (dropout masks), different on every rank and step."""
        return (seed * 1_000_003 + step * 10_007 + self.rank + 1) % 2**63

    def close(self) -> None:
        """Leave the process group if :func:`start` joined it."""
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def start(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join torchrun's process group; returns who we are and the device to train on (``cuda:LOCAL_RANK`` on GPUs).

    Not launched by torchrun: ``(Distributed(), device)``, nothing joined.
    """
    if not launched_by_torchrun():
        return Distributed(), device
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise DistributedError("This PyTorch build has no torch.distributed: train with a single process")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK is {local_rank} but this node has {torch.cuda.device_count()} GPU(s): "
                "give torchrun --nproc_per_node at most the number of GPUs"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise DistributedError(
            f"Multi-process training runs on CUDA GPUs (NCCL) or on CPUs (gloo), not on {device.type}: "
            "use --device cpu, or train with a single process"
        )
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend, timeout=TIMEOUT, device_id=device if backend == "nccl" else None,
                                **_store_of_this_attempt(rank, world))
    return Distributed(rank, world, local_rank, backend, owns), device


def _store_of_this_attempt(rank: int, world: int) -> dict[str, Any]:
    """Under torchrun's shared store, the process group's keys in a namespace of this restart (init arguments).

    torchrun (c10d rendezvous, the default) lends its own store to the workers and keeps it across restarts,
    without a namespace per attempt; a restarted group then reads the dead group's addresses from it (gloo:
    "connectFullMesh failed … Connection refused"; NCCL: the old unique id), pytorch/pytorch#135712, #167288.
    Every process of an attempt has the same TORCHELASTIC_RESTART_COUNT when torchrun restarts the whole group
    after a failure (a lost node fails the others' collectives too). Without the shared store
    (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1) rank 0 hosts a fresh store per attempt and nothing is needed.
    """
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if restart is None or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    import torch.distributed as dist

    store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=TIMEOUT))
    return {"store": dist.PrefixStore(f"ddpm-studio/attempt-{restart}", store), "rank": rank, "world_size": world}
