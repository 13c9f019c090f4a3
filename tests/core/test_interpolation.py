import pytest
import torch

from ddpm_studio.core.interpolation import slerp, slerp_path


def test_slerp_ends_are_exact_and_the_path_stays_on_the_sphere():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn((2, 3, 16, 16), generator=g), torch.randn((2, 3, 16, 16), generator=g)
    path = slerp_path(z0, z1, 7)
    assert path.shape == (7, 2, 3, 16, 16)
    assert torch.equal(path[0], z0) and torch.equal(path[-1], z1)
    # Every frame keeps a norm ≈ √d (between the ends'); a straight line dips to ≈ √(d/2) midway.
    norms = path.flatten(2).norm(dim=2)
    lo, hi = torch.minimum(norms[0], norms[-1]), torch.maximum(norms[0], norms[-1])
    assert ((norms >= lo * 0.999) & (norms <= hi * 1.001)).all()
    assert ((z0 + z1) / 2).flatten(1).norm(dim=1).div(lo).max() < 0.8


def test_slerp_of_parallel_vectors_falls_back_to_a_line():
    z = torch.ones((1, 4))
    assert torch.allclose(slerp(z, 2 * z, 0.5), 1.5 * z)
    with pytest.raises(ValueError, match="at least 2"):
        slerp_path(z, z, 1)
