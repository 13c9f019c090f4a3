"""The settings panel's size and memory estimate (a meta-device model: no weights are allocated)."""

from __future__ import annotations

from ddpm_studio.core.unet import UNet, count_parameters
from ddpm_studio.services import config as c
from ddpm_studio.services.model_size import estimate, estimate_text


def test_estimate_counts_the_models_parameters_and_says_why_when_impossible() -> None:
    cfg = c.from_dict({"model": {"preset": "tiny"}, "data": {"image_size": 16}, "optim": {"batch_size": 4}})
    est = estimate(cfg)
    assert est.parameters == count_parameters(UNet(c.unet_config(cfg)))
    assert est.state_bytes == est.parameters * 4 * 5 and est.activation_bytes > 0
    assert estimate_text(cfg).startswith(f"Model: {est.parameters / 1e6:.2f}M parameters")
    impossible = c.from_dict({"data": {"image_size": 250}})
    assert estimate_text(impossible).startswith("Model size unknown: Invalid U-Net configuration: image size 250")
