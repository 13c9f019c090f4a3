"""diffusers interop: our U-Net and schedules against diffusers' own UNet2DModel / DDPMScheduler / DDPMPipeline.

The sampling comparisons run the same ancestral DDPM path in both libraries: the same x_T and the same
per-step noise (one CPU generator, drawn in the same order: x_T, then one draw per step with t > 0), so the
two trajectories differ only by float32 rounding. Measured max-abs difference of the final images in [0, 1]:
1e-6 to 4e-6 over 50 steps (diffusers 0.42.1, torch 2.14.1, CPU). The bound, 1e-4, leaves 25x headroom and is
still 40x below one 8-bit level (1/255), so the saved PNGs agree but for values on a rounding boundary; any
mapping mistake (a swapped weight, the wrong padding, embedding or schedule) moves images by 0.1 or more.
"""

from __future__ import annotations

import inspect
import json
import os
import sys

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from ddpm_studio.cli import main
from ddpm_studio.core.checkpoint import load_checkpoint, save_checkpoint
from ddpm_studio.core.device import choose_device
from ddpm_studio.core.samplers import SamplerSpec, iter_sampler
from ddpm_studio.core.unet import UNet, preset_config
from ddpm_studio.services import config as c
from ddpm_studio.services.control import drive
from ddpm_studio.services.diffusers_format import (
    SCHEDULER_DEFAULTS,
    UNET_DEFAULTS,
    from_diffusers_weights,
    scheduler_to_diffusers,
    to_diffusers_weights,
    unet_from_diffusers,
    unet_to_diffusers,
)
from ddpm_studio.services.diffusers_interop import (
    DiffusersFormatError,
    export_diffusers,
    import_diffusers,
    is_diffusers_folder,
    read_diffusers_folder,
)
from ddpm_studio.services.model_factory import make_denoiser
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.sampling import load_for_sampling
from ddpm_studio.services.training import TrainingSession

BOUND = 1e-4  # see the module docstring
T = 50
CPU = choose_device("cpu", "off")


def init_kwargs(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def perturbed_(module: torch.nn.Module, seed: int, scale: float = 0.03) -> None:
    """Move every weight away from its initialisation (our conv_out starts at zero): every layer then matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def ours_ddpm(run_or_ckpt, seed: int, n: int = 2) -> tuple[np.ndarray, int]:
    """Our DDPM sampler on a run's model: x_T, then each step's noise, from one generator; images in [0, 1] NHWC."""
    loaded = load_for_sampling(run_or_ckpt, CPU)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *loaded.image_shape), generator=g)
    denoise = make_denoiser(loaded.model, CPU.autocast, prediction=loaded.cfg.diffusion.prediction, schedule=loaded.schedule)
    for s in iter_sampler(SamplerSpec("ddpm"), denoise, loaded.schedule, x, g):
        x = s.x_next
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), loaded.schedule.num_timesteps


def diffusers_ddpm(pipe: DDPMPipeline, seed: int, steps: int, n: int = 2) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=n, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps, output_type="np").images


def diffusers_pipeline(unet_cfg, schedule: str, prediction: str, seed: int = 0) -> DDPMPipeline:
    unet = UNet2DModel(**init_kwargs(unet_to_diffusers(unet_cfg))).eval()
    perturbed_(unet, seed)
    return DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**init_kwargs(scheduler_to_diffusers(schedule, T, prediction))))


@pytest.fixture(scope="module")
def our_run(tmp_path_factory):
    """A tiny trained run (v-prediction, cosine: the defaults) whose weights are then moved far from init. Its power
    EMA is exported as the weights; importing them must continue with a fixed EMA (the import failed to resume with
    "does not match its model settings: 'phema'" while it copied the run's EMA kind)."""
    base = tmp_path_factory.mktemp("runs")
    cfg = c.from_dict({
        "data": {"source": "demo", "image_size": 16}, "model": {"preset": "tiny"}, "diffusion": {"timesteps": T},
        "optim": {"batch_size": 4, "total_steps": 2, "device": "cpu", "ema": "power"},
        "schedule": {"preview_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0},
    })
    drive(TrainingSession(cfg, runs_dir=base, run_name="ours").steps(), lambda e: None)
    run = RunFolder(base / "ours")
    path = run.latest_checkpoint().path
    ckpt = load_checkpoint(path)
    model = UNet(preset_config("tiny", 16, 3, dropout=0.1))
    trained = ckpt["model"]
    for seed, put in ((1, lambda w: ckpt.__setitem__("model", w)), (2, lambda w: ckpt["ema"].__setitem__("model", w))):
        model.load_state_dict(trained)
        perturbed_(model, seed)
        put({k: v.clone() for k, v in model.state_dict().items()})
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
    return run


# -- the tables -----------------------------------------------------------------------------------
def test_default_tables_are_the_installed_diffusers_defaults():
    """A key a diffusers config leaves out means diffusers' default: our tables must be those defaults."""
    for cls, table in ((UNet2DModel, UNET_DEFAULTS), (DDPMScheduler, SCHEDULER_DEFAULTS)):
        params = inspect.signature(cls.__init__).parameters
        defaults = {k: p.default for k, p in params.items() if k != "self"}
        assert set(defaults) == set(table), cls
        for key, value in defaults.items():
            assert (list(value) if isinstance(value, tuple) else value) == table[key], (cls, key)


@pytest.mark.parametrize(("padding", "blocks"), [("symmetric", 1), ("tf", 2)])
def test_our_unet_computes_what_unet2dmodel_computes(padding, blocks):
    ucfg = preset_config("tiny", 16, 3, downsample_padding=padding, num_res_blocks=blocks)
    theirs = UNet2DModel(**init_kwargs(unet_to_diffusers(ucfg))).eval()
    perturbed_(theirs, 0)
    assert unet_from_diffusers(dict(theirs.config)) == ucfg
    ours = UNet(ucfg).eval()
    ours.load_state_dict(from_diffusers_weights(theirs.state_dict(), ucfg))
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([0, 17, 999])
    with torch.no_grad():
        diff = (ours(x, t) - theirs(x, t).sample).abs().max().item()
    assert diff < BOUND
    back = to_diffusers_weights(ours.state_dict(), ucfg)
    assert back.keys() == theirs.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in theirs.state_dict().items())


# -- import ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("schedule", "prediction"), [("linear", "epsilon"), ("cosine", "v")])
def test_imported_model_samples_what_diffusers_samples(tmp_path, schedule, prediction):
    pipe = diffusers_pipeline(preset_config("tiny", 16, 3, downsample_padding="tf"), schedule, prediction)
    pipe.save_pretrained(tmp_path / "pipe")
    result = import_diffusers(tmp_path / "pipe", runs_dir=tmp_path / "runs", name="imported")
    assert result.cfg.diffusion.schedule == schedule and result.cfg.diffusion.prediction == prediction
    assert result.cfg.model.downsample_padding == "tf" and result.step == 0
    ours, steps = ours_ddpm(result.run_dir, seed=7)
    theirs = diffusers_ddpm(pipe, seed=7, steps=steps)
    diff = float(np.abs(ours - theirs).max())
    print(f"import {schedule}/{prediction}: max-abs difference {diff:.2e} over {steps} DDPM steps")
    assert diff < BOUND
    assert float(np.abs(theirs - diffusers_ddpm(pipe, seed=8, steps=steps)).max()) > 0.05  # the comparison can fail


def test_import_reads_the_google_ddpm_layout(tmp_path):
    """google/ddpm-*: config of diffusers 0.0.4 (no add_attention …), TF downsample padding, pre-0.14 attention names
    (query/key/value/proj_attn) in a .bin file, σ² = β. Smaller widths than CIFAR-10's, the same keys."""
    unet_json = {"_class_name": "UNet2DModel", "_diffusers_version": "0.0.4", "act_fn": "silu", "attention_head_dim": None,
                 "block_out_channels": [32, 64, 64], "center_input_sample": False,
                 "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"], "downsample_padding": 0,
                 "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3, "layers_per_block": 2,
                 "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3,
                 "sample_size": 16, "time_embedding_type": "positional",
                 "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}
    scheduler_json = {"_class_name": "DDPMScheduler", "_diffusers_version": "0.1.1", "beta_end": 0.02,
                      "beta_schedule": "linear", "beta_start": 0.0001, "clip_sample": True, "num_train_timesteps": 1000,
                      "trained_betas": None, "variance_type": "fixed_large"}
    reference = UNet2DModel(**init_kwargs(unet_json)).eval()
    perturbed_(reference, 3)
    old_names = {}
    for key, value in reference.state_dict().items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            key = key.replace(f".{new}.", f".{old}.")
        old_names[key] = value
    folder = tmp_path / "ddpm-google-style"
    (folder / "unet").mkdir(parents=True)
    (folder / "scheduler").mkdir()
    (folder / "unet" / "config.json").write_text(json.dumps(unet_json))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_json))
    torch.save(old_names, folder / "unet" / "diffusion_pytorch_model.bin")

    result = import_diffusers(folder / "unet", runs_dir=tmp_path / "runs")  # the unet/ folder itself works too
    assert any("fixed_large" in note for note in result.notes)
    assert result.cfg.diffusion.schedule == "linear" and result.cfg.diffusion.timesteps == 1000
    assert result.cfg.model.downsample_padding == "tf" and result.cfg.model.dropout == 0.0
    loaded = load_for_sampling(result.run_dir, CPU)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 900])
    with torch.no_grad():
        assert (loaded.model(x, t) - reference(x, t).sample).abs().max().item() < BOUND


def test_the_real_cifar10_config_maps_to_our_cifar10_preset(tmp_path):
    """google/ddpm-cifar10-32's own config (weights not needed to read it) is our cifar10 preset with TF padding."""
    folder = tmp_path / "ddpm-cifar10-32"
    (folder / "unet").mkdir(parents=True)
    (folder / "scheduler").mkdir()
    (folder / "unet" / "config.json").write_text(json.dumps({
        "_class_name": "UNet2DModel", "_diffusers_version": "0.0.4", "act_fn": "silu", "attention_head_dim": None,
        "block_out_channels": [128, 256, 256, 256], "center_input_sample": False,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"], "downsample_padding": 0,
        "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3, "layers_per_block": 2, "mid_block_scale_factor": 1,
        "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32, "time_embedding_type": "positional",
        "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDPMScheduler", "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
         "clip_sample": True, "num_train_timesteps": 1000, "trained_betas": None, "variance_type": "fixed_large"}))
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    info = read_diffusers_folder(folder)
    assert info.cfg.model.preset == "cifar10" and info.cfg.model.base_channels is None  # no overrides needed
    assert info.cfg.model.downsample_padding == "tf" and info.cfg.model.dropout == 0.0
    assert (info.cfg.data.image_size, info.cfg.diffusion.timesteps, info.cfg.diffusion.prediction) == (32, 1000, "epsilon")


def _folder(tmp_path, unet_json, scheduler_json=None):
    folder = tmp_path / "f"
    (folder / "unet").mkdir(parents=True)
    (folder / "scheduler").mkdir()
    (folder / "unet" / "config.json").write_text(json.dumps(unet_json))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_json or {}))
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    return folder


def test_a_tutorial_unet2dmodel_is_refused_with_every_reason(tmp_path):
    """diffusers' training example defaults (huggingface's ddpm-butterflies-128 config): four differences, all named."""
    folder = _folder(tmp_path, {
        "_class_name": "UNet2DModel", "act_fn": "silu", "add_attention": True, "attention_head_dim": 8,
        "block_out_channels": [128, 128, 256, 256, 512, 512], "center_input_sample": False,
        "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"], "downsample_padding": 1,
        "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 3, "layers_per_block": 2, "mid_block_scale_factor": 1,
        "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 3, "resnet_time_scale_shift": "default",
        "sample_size": 128, "time_embedding_type": "positional",
        "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4})
    assert is_diffusers_folder(folder)  # it is one; it just does not fit
    with pytest.raises(DiffusersFormatError) as err:
        import_diffusers(folder, runs_dir=tmp_path / "runs")
    text = str(err.value)
    for reason in ("flip_sin_to_cos", "freq_shift", "norm_eps", "64 heads"):
        assert reason in text, text
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("unet_change", "scheduler", "reason"), [
    ({"num_class_embeds": 10}, {}, "no 'no class' row"),
    ({"out_channels": 6}, {}, "learned variance"),
    ({"sample_size": [16, 32]}, {}, "not square"),
    ({"time_embedding_type": "fourier"}, {}, "time_embedding_type"),
    ({"some_future_setting": 1}, {}, "some_future_setting"),
    ({}, {"beta_schedule": "scaled_linear"}, "scaled_linear"),
    ({}, {"prediction_type": "sample"}, "prediction_type"),
    ({}, {"beta_start": 0.001, "num_train_timesteps": 1000}, "linear β runs from 0.001"),
    ({}, {"_class_name": "ScoreSdeVeScheduler"}, "ScoreSdeVeScheduler"),
])
def test_what_does_not_match_is_refused(tmp_path, unet_change, scheduler, reason):
    unet_json = {**unet_to_diffusers(preset_config("tiny", 16, 3)), **unet_change}
    folder = _folder(tmp_path, unet_json, scheduler)
    with pytest.raises(DiffusersFormatError, match=reason):
        read_diffusers_folder(folder)


def test_trained_betas_equal_to_ours_are_accepted(tmp_path):
    from ddpm_studio.core.schedules import cosine_betas

    folder = _folder(tmp_path, unet_to_diffusers(preset_config("tiny", 16, 3)),
                     {"num_train_timesteps": 100, "trained_betas": cosine_betas(100).astype(np.float32).tolist()})
    assert read_diffusers_folder(folder).cfg.diffusion.schedule == "cosine"


class _RunsCode:
    """A pickled object whose loading would create a file: what a hostile .bin does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_import_never_runs_code_from_a_bin_file(tmp_path):
    folder = _folder(tmp_path, unet_to_diffusers(preset_config("tiny", 16, 3)))
    os.remove(folder / "unet" / "diffusion_pytorch_model.safetensors")
    marker = tmp_path / "code-ran"
    torch.save({"conv_in.weight": _RunsCode(str(marker))}, folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(DiffusersFormatError, match="cannot be loaded safely"):
        import_diffusers(folder, runs_dir=tmp_path / "runs")
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    pipe = diffusers_pipeline(preset_config("tiny", 16, 3), "cosine", "v")
    pipe.save_pretrained(tmp_path / "pipe")
    config_path = tmp_path / "pipe" / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["layers_per_block"] = 2  # the weights have one block per level
    config_path.write_text(json.dumps(config))
    with pytest.raises(DiffusersFormatError, match="lack"):
        import_diffusers(tmp_path / "pipe", runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


# -- export ---------------------------------------------------------------------------------------
def test_exported_folder_loads_in_diffusers_and_samples_what_we_sample(our_run, tmp_path):
    result = export_diffusers(our_run.path, tmp_path / "exported")
    assert result.weights == "ema" and result.step == 2
    pipe = DDPMPipeline.from_pretrained(tmp_path / "exported")
    ema = load_checkpoint(our_run.latest_checkpoint().path)["ema"]["model"]
    assert torch.equal(pipe.unet.state_dict()["conv_in.weight"], ema["conv_in.weight"])  # EMA weights by default
    ours, steps = ours_ddpm(our_run.path, seed=11)
    theirs = diffusers_ddpm(pipe, seed=11, steps=steps)
    diff = float(np.abs(ours - theirs).max())
    print(f"export cosine/v: max-abs difference {diff:.2e} over {steps} DDPM steps")
    assert diff < BOUND
    training = export_diffusers(our_run.path, tmp_path / "training", use_ema=False)
    assert training.weights == "training"
    raw = DDPMPipeline.from_pretrained(tmp_path / "training").unet.state_dict()["conv_in.weight"]
    assert not torch.equal(raw, ema["conv_in.weight"])


def test_round_trip_without_diffusers_keeps_weights_step_and_settings(our_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # neither direction may need diffusers itself
    export_diffusers(our_run.path, tmp_path / "out")
    result = import_diffusers(tmp_path / "out", runs_dir=tmp_path / "runs", name="back")
    original = load_checkpoint(our_run.latest_checkpoint().path)
    imported = load_checkpoint(result.checkpoint)
    assert imported["step"] == original["step"] == result.step
    expected = {**original["config"], "optim": {**original["config"]["optim"], "ema": "fixed"}}  # one set of weights
    assert original["config"]["optim"]["ema"] == "power" and imported["config"] == expected
    assert all(torch.equal(imported["model"][k], v) for k, v in original["ema"]["model"].items())
    assert RunFolder(result.run_dir).read_status()["state"] == "imported"


def test_export_refuses_a_conditional_model_and_a_used_folder(conditional_run, our_run, tmp_path):
    with pytest.raises(DiffusersFormatError, match="class-conditional"):
        export_diffusers(conditional_run, tmp_path / "cond")
    assert not (tmp_path / "cond").exists()
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(DiffusersFormatError, match="not an empty folder"):
        export_diffusers(our_run.path, used)
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_is_diffusers_folder(our_run, tmp_path):
    export_diffusers(our_run.path, tmp_path / "d")
    assert is_diffusers_folder(tmp_path / "d") and is_diffusers_folder(tmp_path / "d" / "unet")
    assert not is_diffusers_folder(our_run.path)
    assert not is_diffusers_folder(tmp_path / "missing")
    assert not is_diffusers_folder(tmp_path / "d" / "model_index.json")


def test_cli_export_import_sample_and_train_on(our_run, tmp_path, capsys):
    out = tmp_path / "pipe"
    assert main(["export", str(our_run.path), "--format", "diffusers", str(out)]) == 0
    assert "DDPMPipeline.from_pretrained" in capsys.readouterr().out
    assert main(["sample", str(out)]) == 1
    assert "import it first" in capsys.readouterr().err
    assert main(["import", str(out), "--runs-dir", str(tmp_path / "runs"), "--name", "imp"]) == 0
    run = tmp_path / "runs" / "imp"
    assert main(["sample", str(run), "--num-images", "2", "--steps", "3", "--out", str(tmp_path / "s")]) == 0
    assert main(["train", "--resume", str(run), "--total-steps", "4"]) == 0
    assert RunFolder(run).latest_checkpoint().step == 4


def test_choosing_a_run_preset_after_an_import_gives_our_own_layout():
    """An imported google/ddpm-* run has TF padding; a run preset starts a model of ours (symmetric), and the
    model setting without an "empty" value must not break the reset (it raised ConfigError before)."""
    from ddpm_studio.services.run_presets import RUN_PRESETS, apply_preset

    imported = c.from_dict({"model": {"preset": "cifar10", "downsample_padding": "tf", "dropout": 0.0}})
    for name in RUN_PRESETS:
        cfg = apply_preset(imported, name)
        assert cfg.model.downsample_padding == "symmetric" and c.validate(cfg) == [], name
