"""FID and KID between two sets of image features, and Inception-v3 features when the weights are local.

* FID (Heusel et al. 2017): fit a Gaussian to each feature set and take the Fréchet distance
  d² = ‖μ₁ - μ₂‖² + Tr(Σ₁ + Σ₂ - 2 (Σ₁ Σ₂)^{1/2}). The trace of the matrix square root is computed
  as Σ √λᵢ over the eigenvalues of the symmetric PSD matrix Σ₁^{1/2} Σ₂ Σ₁^{1/2} (same spectrum as
  Σ₁Σ₂), which is stable in float64 and needs no scipy.
* KID (Bińkowski et al. 2018): the unbiased MMD² estimate with the cubic polynomial kernel
  k(x, y) = (xᵀy / d + 1)³, averaged over random subsets; unlike FID it is unbiased at small n.

Both are biased by the feature extractor and (FID) by the sample count: a score from a few hundred
images with torchvision's Inception weights is *not comparable* with published numbers (those use
50k samples and the TF-Inception weights); compare runs with each other only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"  # torchvision's Inception_V3_Weights.IMAGENET1K_V1
INCEPTION_URL = f"https://download.pytorch.org/models/{INCEPTION_FILE}"
NOT_COMPARABLE = (
    "small-sample score with torchvision Inception-v3 features: compare your own runs with each other, "
    "not with numbers from papers (those use 50,000 samples and the TF-Inception weights)"
)


class FeaturesUnavailable(RuntimeError):
    """The Inception weights are not on this computer; the message says how to get them once."""


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix (tiny negative eigenvalues from rounding are clipped)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d² between N(μ₁, Σ₁) and N(μ₂, Σ₂) (Dowson & Landau 1982), the quantity FID reports."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    root1 = _sqrtm_psd(s1)
    eig = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())  # Tr((Σ₁Σ₂)^{1/2})
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean, 0.0))


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two (N, D) feature sets."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def kid_from_features(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """(mean, std) over subsets of the unbiased MMD² with k(x, y) = (xᵀy/d + 1)³ (Bińkowski et al., eq. 4)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = a.shape[1]
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        # Unbiased: drop the diagonals k(x_i, x_i) from the within-set means.
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


# -- Inception features ---------------------------------------------------------------------------
def inception_weights_path() -> Path:
    """Where torchvision keeps the Inception-v3 weights: ``<torch hub dir>/checkpoints/``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def how_to_get_weights() -> str:
    return (
        f"FID/KID need torchvision's Inception-v3 weights ({INCEPTION_FILE}, 104 MB), which are not in "
        f"{inception_weights_path().parent}. Download them once (internet needed) with "
        "`ddpm-studio evaluate --download-inception RUN` or "
        "`python -c \"import torchvision; torchvision.models.inception_v3(weights='IMAGENET1K_V1')\"`, "
        f"or copy the file there from {INCEPTION_URL}."
    )


def download_inception_weights() -> Path:
    """Fetch the weights into the torch hub cache (the only place this package downloads anything)."""
    import torch

    path = inception_weights_path()
    if not path.is_file():
        try:
            torch.hub.load_state_dict_from_url(INCEPTION_URL, progress=True, check_hash=True)
        except OSError as exc:  # URLError is an OSError: offline, proxy, DNS
            raise FeaturesUnavailable(f"Could not download the Inception weights ({exc}). {how_to_get_weights()}") from exc
    return path


@dataclass
class InceptionFeatures:
    """2048-d pool features of torchvision's Inception-v3, built only from a local weights file."""

    model: object
    device: object

    @classmethod
    def load(cls, device: str = "cpu") -> InceptionFeatures:
        import torch
        from torchvision.models import inception_v3

        path = inception_weights_path()
        if not path.is_file() or os.path.getsize(path) == 0:
            raise FeaturesUnavailable(how_to_get_weights())
        # transform_input=True: the Google weights expect inputs in [-1, 1]; it maps ImageNet-normalised
        # inputs there, exactly as torchvision does when it builds the model with these weights.
        model = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.fc = torch.nn.Identity()
        return cls(model.eval().requires_grad_(False).to(device), torch.device(device))

    def __call__(self, images: np.ndarray, batch_size: int = 50) -> np.ndarray:
        """(N, H, W, C) uint8 (C = 1 or 3) → (N, 2048) float64, resized to 299×299 bilinearly."""
        import torch
        import torch.nn.functional as F

        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2).float() / 255
                x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
                x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
                x = ((x - mean) / std).to(self.device)  # type: ignore[arg-type]
                out.append(self.model(x).double().cpu().numpy())  # type: ignore[operator]
        return np.concatenate(out)
