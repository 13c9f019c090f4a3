"""A distance between generated and real scene images (:mod:`ddpm_studio.core.scene_data`) without Inception.

FID needs a feature extractor that knows what matters in the images. No pretrained network is available
offline, so this one is trained here, on the scenes' own labels (number of objects x kind of background, 9
classes), on images generated from a seed the diffusion model never sees. Its 128 penultimate features (after
global average pooling) are then used exactly as FID uses Inception's 2048: the Fréchet distance between
Gaussians fitted to the features of generated and of held-out real scenes (and KID, unbiased at small n).

Limits, to read the numbers by: the features know what tells the 9 classes apart (object count, background
texture) and whatever colour and edge statistics the small network picked up for that; they are blind to
anything else (e.g. an object's exact shape). The scale is this extractor's own: compare runs measured with the
same extractor (same image size, seed and :data:`VERSION`), never with published FIDs. The real-vs-real
distance of two held-out sets (:func:`SceneFeatures.real_baseline`) is the floor a perfect model would reach
at that sample count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddpm_studio.core.fid import fid_from_features, kid_from_features
from ddpm_studio.core.scene_data import NUM_CLASSES, generate_scene_images

VERSION = 1  # bump when the network, its training or the scenes change: cached extractors are then retrained
CLASSIFIER_SEED = 1_000  # scenes the classifier learns from (the diffusion models train on seed 0)
REFERENCE_SEED = 2_000  # held-out real scenes generated samples are compared with


def _net() -> nn.Sequential:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]

    return nn.Sequential(*block(3, 32), nn.AvgPool2d(2), *block(32, 64), nn.AvgPool2d(2), *block(64, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, NUM_CLASSES))


def _to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, S, S) or (N, S, S, 3) numpy/torch → float in [-1, 1], channels first."""
    x = torch.as_tensor(images)
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    return x.float() / 127.5 - 1.0


@dataclass
class SceneFeatures:
    """The trained extractor for one image size; ``accuracy`` is its held-out class accuracy."""

    net: nn.Sequential
    image_size: int
    accuracy: float

    @classmethod
    def train(cls, image_size: int = 32, n: int = 12_288, epochs: int = 6, seed: int = 0) -> SceneFeatures:
        """Train on ``n`` scenes of seed :data:`CLASSIFIER_SEED` (deterministic for a given torch and thread count)."""
        images, labels = generate_scene_images(n + 1024, image_size, CLASSIFIER_SEED)
        x, y = _to_input(images), labels
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        net = _net()
        opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
        steps = epochs * (n // 128)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
        net.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=g)
            for i in range(n // 128):
                idx = order[i * 128:(i + 1) * 128]
                batch = x[idx]
                flip = torch.rand(len(idx), generator=g) < 0.5  # the scenes are mirror-symmetric in distribution
                batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
                loss = nn.functional.cross_entropy(net(batch), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        with torch.inference_mode():
            accuracy = float((net(x[n:]).argmax(1) == y[n:]).float().mean())
        return cls(net.requires_grad_(False), image_size, accuracy)

    @classmethod
    def cached(cls, image_size: int, cache_dir: Path) -> SceneFeatures:
        """The extractor for ``image_size`` from ``cache_dir`` (weights only), trained and saved there if absent."""
        path = cache_dir / f"scene-features-v{VERSION}-{image_size}px.pt"
        if path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=True)
            net = _net()
            net.load_state_dict(state["net"])
            return cls(net.eval().requires_grad_(False), image_size, float(state["accuracy"]))
        made = cls.train(image_size)
        cache_dir.mkdir(parents=True, exist_ok=True)
        from ddpm_studio.core.atomic import atomic_write

        atomic_write(path, lambda fh: torch.save({"net": made.net.state_dict(), "accuracy": made.accuracy}, fh))
        return made

    @torch.inference_mode()
    def __call__(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """(N, 128) float64 features of uint8 images, (N, S, S, 3) or (N, 3, S, S)."""
        x = _to_input(images)
        if x.shape[-1] != self.image_size:
            raise ValueError(f"the extractor was trained on {self.image_size}px scenes, got {x.shape[-1]}px images")
        body = self.net[:-1]
        return torch.cat([body(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).double().numpy()

    def reference(self, n: int = 2_048, seed: int = REFERENCE_SEED) -> np.ndarray:
        """Features of ``n`` held-out real scenes."""
        images, _ = generate_scene_images(n, self.image_size, seed)
        return self(images)

    def real_baseline(self, n: int, reference: np.ndarray) -> dict[str, float]:
        """FID / KID of ``n`` other real scenes against ``reference``: what a perfect model would score."""
        return scene_distance(self(generate_scene_images(n, self.image_size, REFERENCE_SEED + 1)[0]), reference)


def scene_distance(features: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """FID and KID (with its standard deviation over subsets) of ``features`` against ``reference``."""
    kid, kid_std = kid_from_features(features, reference, subset_size=min(len(features), len(reference), 1000))
    return {"fid": fid_from_features(features, reference), "kid": kid, "kid_std": kid_std}
