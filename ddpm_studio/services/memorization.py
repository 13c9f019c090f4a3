"""Does the model copy its training images? Nearest training images of generated samples, and a copy rule.

Distance. ``d(s, x)``: the RMS difference of pixel values in [0, 1] between a sample ``s`` and a training
image ``x``, at the best alignment of the two by up to :data:`MAX_SHIFT` pixel in each direction (the 1-pixel
border left out, so every alignment compares the same number of pixels), and, when the run trained with
horizontal flips, the better of ``x`` and its mirror image (the model saw both). Plain pixel L2 would call a
copy moved by one pixel as far from its original as an unrelated image of a textured data set.

Copy rule. With ``d1`` and ``d2`` the distances to the nearest and second-nearest training images, a sample
is a copy when ``d1 < RATIO_THRESHOLD * d2`` (much closer to one training image than to any other: the
relative rule of Carlini et al. 2023, "Extracting Training Data from Diffusion Models", which needs no scale
for what "close" means in a given data set), or when ``d1 < COPY_DISTANCE`` (visually identical, which also
catches a copy of an image the folder holds twice, where ``d2`` is as small as ``d1``). The two thresholds
are calibrated by ``benchmarks/memorization_calibration.py`` on held-out copies (exact, shifted by one pixel,
mirrored, with light noise), which must all be flagged, and on novel images of the same distributions, which
must not; its table is in docs/memorization.md.

Why no feature distance: the only feature extractor that is offline here is Inception (when its weights are
on disk), and its features are built to call two different images of one kind similar, which would flag
novel samples as copies; copy-detection descriptors (e.g. SSCD) would need a download.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

MAX_SHIFT = 1
#: Flag when the nearest training image is this much closer than the second nearest (see the module docstring).
RATIO_THRESHOLD = 0.25
#: Flag when the nearest training image is this close outright (RMS in [0, 1] units: about 5 of 255 levels).
COPY_DISTANCE = 0.02
_CHUNK_VALUES = 1 << 23  # floats per temporary (32 MB): bounds memory whatever the numbers of images
_SAMPLE_BLOCK = 64
_MARGIN = 8  # candidates beyond k kept by the fast search, re-ranked exactly


@dataclass(frozen=True)
class Neighbours:
    """The ``k`` nearest training images of each of N samples, nearest first."""

    indices: np.ndarray  # (N, k) int64: positions in the training set
    distances: np.ndarray  # (N, k) float32: d(s, x), RMS in [0, 1] units after the best alignment
    mirrored: np.ndarray  # (N, k) bool: the training image's mirror image was the closer one


@dataclass(frozen=True)
class MemorizationCheck:
    """The copy rule applied to each sample: ``flagged`` samples are copies; ``score`` = d1 / d2."""

    neighbours: Neighbours
    score: np.ndarray  # (N,) float32; inf where there is no second training image
    flagged: np.ndarray  # (N,) bool

    @property
    def share(self) -> float:
        return float(self.flagged.mean()) if self.flagged.size else 0.0


def rule_text(mirror: bool) -> str:
    """The rule in one sentence, for reports."""
    return (f"a sample is a copy when its nearest training image is closer than {RATIO_THRESHOLD:.3g} x the distance to "
            f"the second nearest, or closer than {COPY_DISTANCE:g} RMS (pixel values 0-1), after aligning by up to "
            f"{MAX_SHIFT} pixel{' and mirroring' if mirror else ''}")


def _as_nchw_uint8(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) from a tensor in that layout or an (N, H, W, C) uint8 array (what sampling returns)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W) or (N, H, W, C), got {images.dtype} {tuple(images.shape)}")
    return images


def _interior(x: torch.Tensor, dy: int = 0, dx: int = 0) -> torch.Tensor:
    """The image without its MAX_SHIFT border, moved by (dy, dx), flattened to float32 in [0, 1]: (N, D)."""
    s, h, w = MAX_SHIFT, x.shape[-2], x.shape[-1]
    return x[..., s + dy : h - s + dy, s + dx : w - s + dx].flatten(1).to(torch.float32).div_(255.0)


def _query_variants(samples: torch.Tensor, mirror: bool) -> tuple[torch.Tensor, int]:
    """Every alignment of every sample as rows (N * V, D): the samples, moved by each shift (and mirrored)."""
    shifts = [(dy, dx) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1) for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)]
    # Mirroring the sample against x equals comparing the sample with x's mirror image (a flip is an isometry).
    sources = [samples, samples.flip(-1)] if mirror else [samples]
    variants = [_interior(src, dy, dx) for src in sources for dy, dx in shifts]
    return torch.stack(variants, dim=1).flatten(0, 1), len(variants)


def nearest_training_images(
    samples: torch.Tensor | np.ndarray,
    training: torch.Tensor,
    k: int = 2,
    *,
    mirror: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Neighbours:
    """The ``k`` nearest training images of each sample under ``d`` (see the module docstring).

    ``samples``: uint8 (N, C, H, W) or (N, H, W, C); ``training``: uint8 (M, C, H, W), e.g. ``ImageSet.images``
    (a memory-mapped tensor is fine: it is read chunk by chunk, a few tens of MB of float32 at a time). Cost: one
    matrix product of the N x 9 (x 2 mirrored) aligned samples with every training image; 256 samples against
    10,000 32x32 images take seconds on a CPU. Candidates are found with ``|a|² + |b|² - 2a·b`` and their
    distances then recomputed directly, so an exact copy is at distance 0, not at float32 rounding noise.
    """
    samples = _as_nchw_uint8(samples)
    if training.dtype != torch.uint8 or training.ndim != 4 or training.shape[1:] != samples.shape[1:]:
        raise ValueError(f"training images must be uint8 {tuple(samples.shape[1:])} like the samples, "
                         f"got {training.dtype} {tuple(training.shape)}")
    n, m = samples.shape[0], training.shape[0]
    k = min(k, m)
    if k < 1:
        raise ValueError("there are no training images to compare with")
    variants = 9 * (2 if mirror else 1)
    values = int(np.prod(samples.shape[1:]))
    # Bounded memory whatever N and M: samples in blocks, training images in chunks, each product ≤ _CHUNK_VALUES.
    per_chunk = max(1, min(_CHUNK_VALUES // values, _CHUNK_VALUES // (_SAMPLE_BLOCK * variants)))
    blocks = range(0, n, _SAMPLE_BLOCK)
    total, done = len(blocks) * -(-m // per_chunk), 0
    found: list[Neighbours] = []
    for b in blocks:
        queries, v = _query_variants(samples[b : b + _SAMPLE_BLOCK], mirror)
        nb = queries.shape[0] // v
        q_sq = (queries * queries).sum(1).view(nb, v, 1)
        best_d = torch.full((nb, 0), float("inf"))
        best_i = torch.zeros((nb, 0), dtype=torch.long)
        for start in range(0, m, per_chunk):
            refs = _interior(training[start : start + per_chunk])
            d2 = q_sq + (refs * refs).sum(1).view(1, 1, -1) - 2.0 * (queries @ refs.T).view(nb, v, -1)
            merged_d = torch.cat([best_d, d2.amin(dim=1)], dim=1)  # the best alignment with each training image
            merged_i = torch.cat([best_i, torch.arange(start, start + refs.shape[0]).expand(nb, -1)], dim=1)
            top = merged_d.topk(min(k + _MARGIN, merged_d.shape[1]), dim=1, largest=False)
            best_d, best_i = top.values, merged_i.gather(1, top.indices)
            done += 1
            if progress is not None:
                progress(done, total)
        found.append(_exact(queries.view(nb, v, -1), training, best_i, k, mirror))
    return Neighbours(*(np.concatenate([getattr(f, name) for f in found]) for name in ("indices", "distances", "mirrored")))


def _exact(queries: torch.Tensor, training: torch.Tensor, candidates: torch.Tensor, k: int, mirror: bool) -> Neighbours:
    """Recompute the candidates' distances directly (no cancellation), keep the k nearest."""
    refs = _interior(training[candidates.flatten()]).view(*candidates.shape, -1)  # (B, c, D)
    per_variant = torch.stack([(queries - refs[:, j, None, :]).pow_(2).mean(-1) for j in range(refs.shape[1])], 1)
    dist, variant = per_variant.min(-1)  # (B, c): the best alignment
    order = dist.argsort(dim=1)[:, :k]
    half = queries.shape[1] // 2
    return Neighbours(
        indices=candidates.gather(1, order).numpy(),
        distances=dist.gather(1, order).sqrt().numpy().astype(np.float32),
        mirrored=(variant.gather(1, order) >= half).numpy() if mirror else np.zeros(order.shape, dtype=bool),
    )


def check_memorization(
    samples: torch.Tensor | np.ndarray,
    training: torch.Tensor,
    *,
    mirror: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> MemorizationCheck:
    """Apply the copy rule to every sample (see the module docstring for the rule and its calibration)."""
    nb = nearest_training_images(samples, training, k=2, mirror=mirror, progress=progress)
    return MemorizationCheck(nb, *copy_rule(nb.distances))


def copy_rule(distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score = d1 / d2, flagged) of each row of ``distances`` (N, k ≥ 1), nearest first (see the module docstring)."""
    d1 = distances[:, 0]
    if distances.shape[1] > 1:
        d2 = distances[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(d2 > 0, d1 / d2, np.where(d1 > 0, np.inf, 0.0)).astype(np.float32)
    else:  # one training image: "closer than to any other" means nothing; only the absolute rule applies
        score = np.full(d1.shape, np.inf, dtype=np.float32)
    return score, (score < RATIO_THRESHOLD) | (d1 < COPY_DISTANCE)


#: The light noise of the calibration's noisy copies: σ = 4 of 255 levels (RMS difference ≈ 0.016).
PROBE_NOISE = 4.0


def copy_probes(images: torch.Tensor, *, seed: int = 0, mirror: bool = False) -> dict[str, torch.Tensor]:
    """What the rule must call copies of ``images`` (uint8 (N, C, H, W)): the images themselves, moved by one
    pixel in each of four directions (the uncovered edge repeats its neighbour, as a model redrawing the image
    would fill it), mirrored (when the run trains with flips, so the model saw the mirror image), and with
    light Gaussian noise of σ = :data:`PROBE_NOISE` levels. Used to calibrate the thresholds and to test them."""
    x = images.to(torch.int16)

    def moved(dy: int, dx: int) -> torch.Tensor:
        out = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
        if dy:
            edge = 0 if dy > 0 else -1
            out[..., edge, :] = out[..., edge + (1 if dy > 0 else -1), :]
        if dx:
            edge = 0 if dx > 0 else -1
            out[..., edge] = out[..., edge + (1 if dx > 0 else -1)]
        return out

    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * PROBE_NOISE
    probes = {
        "exact": x,
        "shift": torch.cat([moved(0, 1), moved(1, 0), moved(0, -1), moved(-1, 0)]),
        **({"mirror": x.flip(-1)} if mirror else {}),
        "noise": (x.float() + noise).round().clamp(0, 255),
    }
    return {k: v.to(torch.uint8) for k, v in probes.items()}
