"""Deterministic, resumable mini-batches from an image set (in memory or memory-mapped from the decoded cache).

The order is a pure function of (seed, epoch): each epoch is ``randperm`` from a generator
seeded with both, so resuming needs only (epoch, position), no sampler state. Under
torchrun, rank r takes every world-th index of the same permutation (a distributed sampler);
checkpoints keep the position in global samples, so a run resumes under another world size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class BatchCursor:
    """Where the run is in its data: the epoch and the position inside this rank's share."""

    epoch: int = 0
    position: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    @classmethod
    def from_state(cls, state: dict[str, int]) -> BatchCursor:
        return cls(int(state["epoch"]), int(state["position"]))

    def global_state(self, world: int) -> dict[str, int]:
        """The cursor in global samples: ranks move in step, so ``world`` x this rank's position are used up."""
        return {"epoch": self.epoch, "position": self.position * world}

    @classmethod
    def from_global_state(cls, state: dict[str, int], world: int) -> BatchCursor:
        """A rank's cursor under ``world`` ranks from :meth:`global_state` saved under any world size.

        Rank r's position p is global index p * world + r, so the first ``position`` samples of the epoch
        are skipped exactly when ``world`` divides it (else up to world - 1 of them are seen again).
        """
        return cls(int(state["epoch"]), int(state["position"]) // world)


class BatchStream:
    """Yields (indices, flip mask) batches, drawn without replacement epoch by epoch."""

    def __init__(self, size: int, batch_size: int, seed: int, *, hflip: bool, rank: int = 0, world: int = 1,
                 cursor: BatchCursor | None = None) -> None:
        if size < 1:
            raise ValueError("No images to train on")
        self.size, self.batch_size, self.seed, self.hflip = size, batch_size, seed, hflip
        self.rank, self.world = rank, world
        self.cursor = cursor or BatchCursor()
        self._order = self._epoch_order(self.cursor.epoch)

    def _epoch_order(self, epoch: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.size, generator=g)
        flips = torch.rand(self.size, generator=g) < 0.5 if self.hflip else torch.zeros(self.size, dtype=torch.bool)
        # Every rank gets the same number of indices (padded by wrapping, like DistributedSampler).
        per_rank = -(-self.size // self.world)
        padded = torch.cat([perm, perm[: per_rank * self.world - self.size]])
        return padded[self.rank :: self.world], flips

    def next(self) -> tuple[Tensor, Tensor]:
        """The next batch of indices and whether to flip each; crosses epoch ends seamlessly."""
        idx_parts, flip_parts, need = [], [], self.batch_size
        while need:
            order, flips = self._order
            take = order[self.cursor.position : self.cursor.position + need]
            idx_parts.append(take)
            flip_parts.append(flips[take])
            need -= len(take)
            self.cursor.position += len(take)
            if self.cursor.position >= len(order):
                self.cursor = BatchCursor(self.cursor.epoch + 1, 0)
                self._order = self._epoch_order(self.cursor.epoch)
        return torch.cat(idx_parts), torch.cat(flip_parts)


def images_to_batch(images: Tensor, idx: Tensor, flip: Tensor, device: torch.device) -> Tensor:
    """uint8 (N, C, H, W) rows ``idx`` → float32 in [-1, 1] on ``device``, flipped where asked.

    The rows are gathered in ascending index order, then put in batch order (a copy of the small uint8
    batch): on a memory-mapped set that reads the file front to back, so neighbouring rows share their page
    reads. ``index_select`` is also several times faster than ``images[idx]`` (benchmarks/big_dataset.py).
    """
    ascending, order = idx.sort()
    x = images.index_select(0, ascending).index_select(0, order.argsort())
    if flip.device.type != "cpu":  # images, idx and flip already on a GPU: flip there, without reading the mask
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    elif flip.any():
        x[flip] = x[flip].flip(-1)
    x = x.to(device, non_blocking=True)
    return x.float().div_(127.5).sub_(1.0)
