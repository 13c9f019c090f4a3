"""A quality score for samples of a model trained on the built-in demo shapes.

Why: the demo images follow exact rules (:mod:`ddpm_studio.core.demo_data`), so whether a generated
image is *right* can be checked directly, with no Inception network and no thousands of samples. The
score is the fraction of images this detector reads as one clean, filled shape of a valid colour on a
clean white background. It measures validity, not variety: the reported shape and colour histograms
show whether the model also covers every class.

Per image (H, W, C uint8):

1. colour: the "core" pixels (those at least 80 % as far from white as the farthest) must be close to
   one palette colour c; every pixel is then read as a blend p = 255 + a (c - 255) of c with white, the
   shape's coverage a ∈ [0, 1] being the projection of 255 - p on 255 - c;
2. shape: for each of circle / square / triangle, the box is solved from the coverage's area A and
   centroid (square: side √A; circle: √(4A/π); triangle: √(2A), centroid at 2/3 of the height), the
   ideal shape is rendered with the generator's own supersampling, and the best soft IoU Σmin/Σmax
   must reach :data:`MIN_IOU`; the box must obey the size and margin rules (with a pixel of slack);
3. cleanliness: one 8-connected component, no holes, no pixel of another colour inside the shape, and
   white everywhere more than one pixel away from the fitted shape.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from ddpm_studio.core.demo_data import DEMO_COLORS, DEMO_SHAPES, MAX_FRACTION, MIN_FRACTION, _coverage, _margin

MIN_IOU = 0.85  # circle vs square of the same box: IoU π/4 ≈ 0.785, so 0.85 tells them apart
COLOR_TOLERANCE = {3: 40.0, 1: 15.0}  # distance of the core colour to the palette (RGB palette gaps are > 100)
BLEND_TOLERANCE = {3: 40.0, 1: 15.0}  # how far a shape pixel may lie from the white-to-colour line
WHITE_TOLERANCE = 40.0  # |255 - p| of a background pixel
MAX_DIRTY_FRACTION = 0.005  # share of background pixels allowed above WHITE_TOLERANCE (noise specks)
MAX_OFF_COLOR_FRACTION = 0.03  # share of shape pixels allowed off the blend line
MIN_COVERAGE = 0.1  # coverage below this counts as white (edge pixels lose < 0.1 px of area each)
SIZE_SLACK = 1.0  # pixels of tolerance on the size and margin rules


@dataclass(frozen=True)
class ShapeReading:
    """What the detector read in one image; ``reason`` is empty when the image is valid."""

    valid: bool
    shape: str | None
    color: str | None
    iou: float
    reason: str


@dataclass(frozen=True)
class DemoScore:
    """The fraction of valid images and what was seen. Not comparable with any published number."""

    score: float
    count: int
    readings: tuple[ShapeReading, ...] = field(repr=False)
    reasons: dict[str, int]
    shapes: dict[str, int]
    colors: dict[str, int]
    class_accuracy: float | None = None  # valid images whose shape is the class they were asked for

    def summary(self) -> str:
        text = f"demo shape score {self.score:.3f} ({sum(r.valid for r in self.readings)}/{self.count} valid)"
        if self.class_accuracy is not None:
            text += f", class accuracy {self.class_accuracy:.3f}"
        return text


def _palette(channels: int) -> np.ndarray:
    """The demo colours in the image's channel space (grayscale = the generator's luminance)."""
    rgb = np.array(list(DEMO_COLORS.values()), dtype=np.float64)
    if channels == 1:
        return (rgb @ np.array([0.299, 0.587, 0.114]))[:, None]
    return rgb


def _components(mask: np.ndarray) -> list[int]:
    """Sizes of the 8-connected components of ``mask`` (breadth-first search; images are small)."""
    seen = np.zeros_like(mask, dtype=bool)
    sizes = []
    h, w = mask.shape
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        seen[y, x] = True
        queue, size = deque([(y, x)]), 0
        while queue:
            cy, cx = queue.popleft()
            size += 1
            for ny in range(max(cy - 1, 0), min(cy + 2, h)):
                for nx in range(max(cx - 1, 0), min(cx + 2, w)):
                    if mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        sizes.append(size)
    return sizes


def _has_holes(mask: np.ndarray) -> bool:
    """True when some non-shape pixel cannot reach the border through non-shape pixels (4-connected)."""
    outside = ~mask
    reached = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    queue = deque((y, x) for y in range(h) for x in (0, w - 1) if outside[y, x])
    queue.extend((y, x) for x in range(w) for y in (0, h - 1) if outside[y, x])
    for y, x in queue:
        reached[y, x] = True
    while queue:
        y, x = queue.popleft()
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < h and 0 <= nx < w and outside[ny, nx] and not reached[ny, nx]:
                reached[ny, nx] = True
                queue.append((ny, nx))
    return bool((outside & ~reached).any())


def _fit_shapes(alpha: np.ndarray) -> list[tuple[float, int, float, float, float]]:
    """(IoU, shape index, x0, y0, side) for each shape hypothesis, from the coverage's area and centroid."""
    size = alpha.shape[0]
    area = float(alpha.sum())
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    cx, cy = float((alpha * xs).sum() / area), float((alpha * ys).sum() / area)
    sides = [math.sqrt(4 * area / math.pi), math.sqrt(area), math.sqrt(2 * area)]  # circle, square, triangle
    x0 = np.array([cx - s / 2 for s in sides])
    y0 = np.array([cy - sides[0] / 2, cy - sides[1] / 2, cy - 2 * sides[2] / 3])  # triangle centroid: 2/3 down
    ideal = _coverage(np.arange(3), x0, y0, np.array(sides), size).astype(np.float64)
    fits = []
    for k in range(3):
        iou = float(np.minimum(alpha, ideal[k]).sum() / max(np.maximum(alpha, ideal[k]).sum(), 1e-9))
        fits.append((iou, k, float(x0[k]), float(y0[k]), sides[k]))
    return fits


def read_image(image: np.ndarray) -> ShapeReading:
    """Read one (H, W, C) uint8 image (C = 1 or 3) against the demo rules."""
    size, channels = image.shape[0], image.shape[-1]
    if image.shape[1] != size or channels not in (1, 3):
        raise ValueError(f"expected a square (H, W, 1|3) image, got {image.shape}")
    p = image.astype(np.float64)
    ink = 255.0 - p
    ink_norm = np.linalg.norm(ink, axis=-1)
    if ink_norm.max() < 0.3 * WHITE_TOLERANCE * 3:
        return ShapeReading(False, None, None, 0.0, "blank")
    palette = _palette(channels)
    core = ink_norm >= 0.8 * ink_norm.max()
    core_color = np.median(p[core], axis=0)
    dists = np.linalg.norm(palette - core_color, axis=1)
    k = int(np.argmin(dists))
    color_name = list(DEMO_COLORS)[k]
    if dists[k] > COLOR_TOLERANCE[channels]:
        return ShapeReading(False, None, None, 0.0, "colour not in the palette")
    v = 255.0 - palette[k]
    alpha = np.clip((ink @ v) / (v @ v), 0.0, 1.0)
    alpha[alpha < MIN_COVERAGE] = 0.0  # faint noise on white would otherwise add up to a sizeable area
    mask = alpha > 0.5
    fits = sorted(_fit_shapes(alpha), reverse=True)
    iou, shape_k, x0, y0, side = fits[0]
    shape = DEMO_SHAPES[shape_k]

    def invalid(reason: str) -> ShapeReading:
        return ShapeReading(False, shape, color_name, iou, reason)

    residual = np.linalg.norm(ink - alpha[..., None] * v, axis=-1)
    if (residual[mask] > BLEND_TOLERANCE[channels]).mean() > MAX_OFF_COLOR_FRACTION:
        return invalid("more than one colour")
    if len(_components(mask)) != 1:
        return invalid("several shapes or specks")
    if _has_holes(mask):
        return invalid("shape not filled")
    if iou < MIN_IOU:
        return invalid("shape not recognised")
    margin, lo, hi = _margin(size), MIN_FRACTION * size - SIZE_SLACK, MAX_FRACTION * size + SIZE_SLACK
    if not lo <= side <= hi:
        return invalid("shape too small or too large")
    if min(x0, y0) < margin - SIZE_SLACK or max(x0, y0) + side > size - margin + SIZE_SLACK:
        return invalid("shape in the margin")
    # Background: white everywhere more than one pixel away from the fitted ideal shape.
    ideal = _coverage(np.array([shape_k]), np.array([x0]), np.array([y0]), np.array([side]), size)[0] > 0
    near = ideal.copy()
    near[1:] |= ideal[:-1]
    near[:-1] |= ideal[1:]
    near[:, 1:] |= near[:, :-1].copy()
    near[:, :-1] |= near[:, 1:].copy()
    dirty = (ink_norm[~near] > WHITE_TOLERANCE).mean() if (~near).any() else 0.0
    if dirty > MAX_DIRTY_FRACTION:
        return invalid("background not clean")
    return ShapeReading(True, shape, color_name, iou, "")


def demo_score(images: np.ndarray, labels: np.ndarray | None = None) -> DemoScore:
    """Score (N, H, W, C) uint8 images; ``labels`` (shape indices asked for) add a class accuracy."""
    if images.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) images, got shape {images.shape}")
    readings = tuple(read_image(img) for img in images)
    n = len(readings)
    valid = [r for r in readings if r.valid]
    accuracy = None
    if labels is not None and n:
        hits = sum(r.valid and r.shape == DEMO_SHAPES[int(y)] for r, y in zip(readings, labels, strict=True))
        accuracy = hits / n
    return DemoScore(
        score=len(valid) / n if n else 0.0,
        count=n,
        readings=readings,
        reasons=dict(Counter(r.reason for r in readings if not r.valid)),
        shapes=dict(Counter(r.shape for r in valid if r.shape)),
        colors=dict(Counter(r.color for r in valid if r.color)),
        class_accuracy=accuracy,
    )
