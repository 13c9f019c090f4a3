"""The DDPM U-Net: shapes for every preset, the paper's parameter count, conditioning, init, formats, validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddpm_studio.core.unet import (
    PRESETS,
    UNet,
    UNetConfig,
    count_parameters,
    preset_config,
    preset_description,
    preset_names,
)
from ddpm_studio.core.unet_blocks import SinusoidalEmbedding, sinusoidal_frequencies

TINY = preset_config("tiny")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def randomize_zero_layers(model: nn.Module) -> nn.Module:
    """Give the zero-initialised layers small random weights so the output depends on everything."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0.0, 0.05)
    return model


def small_model(**overrides) -> UNet:
    return randomize_zero_layers(UNet(dataclasses.replace(TINY, dropout=0.0, **overrides))).eval()


# -- shapes and sizes ----------------------------------------------------------------------------
def _shape_cases():
    for name in preset_names():
        native = PRESETS[name].config.image_size
        yield pytest.param(name, 3, native, id=f"{name}-rgb-{native}")
        # One channel only changes conv_in/conv_out: the big presets check it at a smaller size (fast).
        yield pytest.param(name, 1, min(native, 64), id=f"{name}-grey-{min(native, 64)}")


@pytest.mark.parametrize(("name", "channels", "size"), list(_shape_cases()))
def test_every_preset_keeps_the_input_shape(name, channels, size):
    cfg = preset_config(name, image_size=size, in_channels=channels)
    model = randomize_zero_layers(UNet(cfg)).eval()
    x = torch.randn(1, channels, size, size)
    with torch.no_grad():
        out = model(x, torch.tensor([999]))
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert model.config is cfg


def test_cifar10_preset_has_the_papers_35_7m_parameters():
    with torch.device("meta"):
        n = count_parameters(UNet(preset_config("cifar10")))
    assert abs(n - 35_746_307) / 35_746_307 < 0.005  # diffusers' DDPM CIFAR-10 UNet2DModel; paper: 35.7M
    with torch.device("meta"):
        n256 = count_parameters(UNet(preset_config("ddpm-256")))
    assert abs(n256 - 114e6) / 114e6 < 0.01  # paper: 114M for LSUN / CelebA-HQ 256


def test_preset_sizes_and_descriptions():
    with torch.device("meta"):
        tiny = count_parameters(UNet(preset_config("tiny")))
        laptop = count_parameters(UNet(preset_config("laptop")))
    assert tiny < 1_000_000
    assert 2_000_000 < laptop < 7_000_000
    for name in preset_names():
        assert preset_description(name).strip()
        assert "\n" not in preset_description(name)
        assert preset_config(name).image_size == PRESETS[name].config.image_size


def test_preset_names_match_the_run_settings():
    from ddpm_studio.services.config import MODEL_PRESETS

    assert preset_names() == list(MODEL_PRESETS)


def test_other_image_size_keeps_attention_at_the_same_depth():
    assert preset_config("tiny", image_size=28).attention_resolutions == (14,)  # MNIST
    assert preset_config("laptop", image_size=64).attention_resolutions == (16,)  # 8 at 32x32: depth 2
    assert preset_config("cifar10", image_size=64).attention_resolutions == (32,)
    assert preset_config("cifar10", image_size=64, attention_resolutions=(16, 8)).attention_resolutions == (16, 8)
    cfg = preset_config("cifar10", in_channels=1, base_channels=64, channel_mults=[1, 2])
    assert (cfg.in_channels, cfg.base_channels, cfg.channel_mults, cfg.attention_resolutions) == (1, 64, (1, 2), (16,))


# -- conditioning and timesteps -------------------------------------------------------------------
def test_class_labels_change_the_output_and_none_means_the_null_label():
    model = small_model(num_classes=3)
    assert model.class_embed is not None and model.class_embed.num_embeddings == 4
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 500])
    with torch.no_grad():
        out0 = model(x, t, torch.tensor([0, 0]))
        out1 = model(x, t, torch.tensor([1, 1]))
        out_null = model(x, t, torch.tensor([3, 3]))
        out_none = model(x, t)
    assert not torch.allclose(out0, out1, atol=1e-4)
    torch.testing.assert_close(out_none, out_null)


def test_unconditional_model_has_no_class_embedding():
    assert small_model().class_embed is None


def test_timestep_matters_and_int_float_and_scalar_t_agree():
    model = small_model()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        a = model(x, torch.tensor([10, 10]))
        b = model(x, torch.tensor([10.0, 10.0]))
        c = model(x, torch.tensor(10))
        d = model(x, torch.tensor([900, 900]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    assert not torch.allclose(a, d, atol=1e-4)


def test_sinusoidal_embedding_is_float32_and_survives_dtype_and_meta_moves():
    emb = SinusoidalEmbedding(32)
    t = torch.tensor([0, 999])
    ref = emb(t)
    assert ref.shape == (2, 32) and ref.dtype == torch.float32
    torch.testing.assert_close(ref[0], torch.cat([torch.zeros(16), torch.ones(16)]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert emb(t).dtype == torch.float32
    emb.to(torch.bfloat16)
    assert emb.freqs.dtype == torch.float32
    torch.testing.assert_close(emb(t), ref)
    with torch.device("meta"):
        lazy = SinusoidalEmbedding(32)
    lazy.to_empty(device="cpu")
    torch.testing.assert_close(lazy.freqs, sinusoidal_frequencies(32))


# -- initialisation and training ---------------------------------------------------------------------
def test_fresh_model_predicts_zero_and_one_step_changes_that():
    model = UNet(TINY)
    x, t = torch.randn(4, 3, 16, 16), torch.randint(0, 1000, (4,))
    assert not model(x, t).any()  # zero-initialised head, as in the paper's code
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    F.mse_loss(model(x, t), torch.randn_like(x)).backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        assert model(x, t).abs().mean() > 0


def test_full_precision_bf16_model_runs():
    model = small_model().to(torch.bfloat16)
    x = torch.randn(1, 3, 16, 16, dtype=torch.bfloat16)
    with torch.no_grad():
        out = model(x, torch.tensor([500]))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# -- memory formats and precision -------------------------------------------------------------------
@pytest.mark.parametrize("num_heads", [1, 2])
def test_channels_last_matches_contiguous(num_heads):
    model = small_model(num_heads=num_heads)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    with torch.no_grad():
        ref = model(x, t)
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl(x.contiguous(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_is_close_to_float32():
    model = small_model()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    with torch.no_grad():
        ref = model(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t)
    assert out.dtype == torch.float32  # returned in the input's dtype
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.05


def test_backward_works_under_autocast_with_channels_last():
    model = small_model().train().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.mse_loss(model(x, torch.tensor([1, 2])).float(), x)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# -- validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": 2}, "channels must be 1"),
        ({"base_channels": 48}, "multiple of 32"),
        ({"channel_mults": ()}, "channel multipliers"),
        ({"channel_mults": (1, 0)}, "channel multipliers"),
        ({"num_res_blocks": 0}, "residual blocks"),
        ({"dropout": 1.0}, "dropout"),
        ({"num_classes": -1}, "classes"),
        ({"image_size": 28, "channel_mults": (1, 2, 2, 2)}, "divisible by 8"),
        ({"image_size": 4, "channel_mults": (1, 2, 2, 2)}, "divisible by 8"),
        ({"attention_resolutions": (12,)}, "attention resolution 12"),
        ({"base_channels": 32, "num_heads": 3}, "attention heads"),
    ],
)
def test_invalid_configs_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNetConfig(**kwargs)


def test_invalid_preset_requests_raise_value_error():
    with pytest.raises(ValueError, match="Unknown model preset"):
        preset_config("huge")
    with pytest.raises(ValueError, match="Unknown U-Net setting"):
        preset_config("tiny", channels=3)
    with pytest.raises(ValueError, match="use size 24 or 32"):
        preset_config("cifar10", image_size=28)
    with pytest.raises(ValueError, match="Unknown model preset"):
        preset_description("huge")
