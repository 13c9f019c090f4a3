"""Checks that a loaded checkpoint can be used, made before any model is built from it.

:func:`ddpm_studio.core.checkpoint.load_checkpoint` proves a file is a complete DDPM Studio checkpoint
and that loading it ran no code. A file can pass that and still be unusable or hostile: settings of
the wrong type, settings that describe a model of billions of parameters (building it would exhaust
memory before the weights are even compared), weights of another network, a step that is not a
number, NaN weights from a diverged run. Everything here raises :class:`CheckpointError` with a
sentence for the user, and allocates nothing: the network is built on PyTorch's ``meta`` device,
which records shapes only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ddpm_studio.core.checkpoint import CheckpointError
from ddpm_studio.services import config as config_mod
from ddpm_studio.services import config_files
from ddpm_studio.services.model_factory import build_model


def checked_config(ckpt: dict[str, Any], path: str | Path) -> config_mod.RunConfig:
    """The run settings stored in ``ckpt``, refused unless they are well-typed and in range."""
    name = Path(path).name
    raw = ckpt.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"Checkpoint {name} has no readable settings (its config is {type(raw).__name__}, not a table)")
    try:
        cfg = config_mod.from_dict(config_files.with_legacy_defaults(raw), strict=False)
    except config_mod.ConfigError as exc:
        raise CheckpointError(f"Checkpoint {name} has settings this version cannot use: {'; '.join(exc.errors)}") from None
    # The data folder of the machine that trained it need not exist here: check everything else.
    errors = config_mod.validate(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source="demo")))
    if errors:
        raise CheckpointError(f"Checkpoint {name} has settings this version cannot use: {'; '.join(errors)}")
    return cfg


def checked_step(ckpt: dict[str, Any], path: str | Path) -> int:
    step = ckpt.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"Checkpoint {Path(path).name} is damaged: its step is {step!r}, not a whole number")
    return step


def checked_class_names(ckpt: dict[str, Any], path: str | Path) -> tuple[str, ...]:
    names = ckpt.get("class_names", ())
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"Checkpoint {Path(path).name} is damaged: its class names are not a list of names")
    return tuple(names)


def checked_weights(ckpt: dict[str, Any], cfg: config_mod.RunConfig, path: str | Path, *, use_ema: bool = True,
                    num_classes: int = 0) -> dict[str, torch.Tensor]:
    """The (EMA) weights of ``ckpt``, refused unless they have exactly the shapes ``cfg``'s network has, and are finite."""
    weights: Any = ckpt.get("model")
    if use_ema and ckpt.get("ema"):
        ema = ckpt["ema"]
        weights = ema.get("model") if isinstance(ema, dict) else None
    return checked_table(weights, expected_shapes(cfg, num_classes), Path(path).name)


def checked_table(weights: Any, expected: dict[str, tuple[int, ...]], name: str) -> dict[str, torch.Tensor]:
    """``weights`` if it is a table of finite tensors with exactly the ``expected`` names and shapes."""
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise CheckpointError(f"Checkpoint {name} is damaged: its weights are not a table of tensors")
    got = {k: tuple(v.shape) for k, v in weights.items()}
    missing = sorted(expected.keys() - got.keys())
    unexpected = sorted(got.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
    if missing or unexpected or wrong:
        if wrong:
            first = f"{wrong[0]} is {list(got[wrong[0]])} in the file but {list(expected[wrong[0]])} for these settings"
        elif missing:
            first = f"{missing[0]} is missing"
        else:
            first = f"{unexpected[0]} is not part of this network"
        count = len(missing) + len(unexpected) + len(wrong)
        more = f" ({count} differences in all)" if count > 1 else ""
        raise CheckpointError(f"Checkpoint {name}'s weights do not fit its model settings: {first}{more}. "
                              "It may come from another program or version, or have been edited")
    for key, value in weights.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"Checkpoint {name} holds NaN or infinite weights ({key}): the run had diverged "
                                  "before it was saved. Use an earlier checkpoint")
    return weights


def checked_ema_sources(ckpt: dict[str, Any], cfg: config_mod.RunConfig, path: str | Path,
                        num_classes: int = 0) -> tuple[int, list[Any]]:
    """(step, stored averages) of a power-EMA checkpoint, for rebuilding another EMA length (post-hoc EMA).

    Refused with a sentence for the user when the checkpoint has none (a fixed-decay EMA, or written before
    post-hoc EMA existed) or when they are malformed: every table must fit the network like its weights.
    """
    from ddpm_studio.core.posthoc_ema import MAX_SIGMA_REL
    from ddpm_studio.core.power_ema import sources_from_state

    name = Path(path).name
    state = ckpt.get("phema")
    if state is None:
        raise CheckpointError(f"Checkpoint {name} keeps no EMA averages to rebuild another EMA length from: its run "
                              "used a fixed-decay EMA (EMA kind fixed, or a version before post-hoc EMA). Sample it "
                              "without an EMA length")
    try:
        tracked = [float(s) for s in state["tracked"]]
        step = state["num_updates"]
        tables = list(state["averages"]) + [t for snap in state["snapshots"] for t in snap["averages"]]
        well_formed = (isinstance(step, int) and not isinstance(step, bool) and step >= 0 and tracked
                       and all(0 < s < MAX_SIGMA_REL for s in tracked) and len(state["averages"]) == len(tracked)
                       and all(len(snap["averages"]) == len(tracked) and isinstance(snap["step"], int)
                               and 0 < snap["step"] <= step for snap in state["snapshots"]))
    except (KeyError, TypeError, ValueError, AttributeError):
        well_formed = False
    if not well_formed:
        raise CheckpointError(f"Checkpoint {name} is damaged: its stored EMA averages are not readable")
    expected = expected_shapes(cfg, num_classes)
    for table in tables:
        checked_table(table, expected, name)
    return step, sources_from_state(state)


def expected_shapes(cfg: config_mod.RunConfig, num_classes: int = 0) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every entry of the state dict of the network ``cfg`` describes (nothing allocated)."""
    with torch.device("meta"):
        model = build_model(cfg, num_classes=num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_checkpoint(ckpt: dict[str, Any], path: str | Path, *, use_ema: bool = True) -> config_mod.RunConfig:
    """All of the above: the checkpoint's settings, once its step, classes and weights are known to fit them."""
    cfg = checked_config(ckpt, path)
    checked_step(ckpt, path)
    classes = checked_class_names(ckpt, path)
    checked_weights(ckpt, cfg, path, use_ema=use_ema, num_classes=len(classes))
    if use_ema and ckpt.get("ema"):
        checked_weights(ckpt, cfg, path, use_ema=False, num_classes=len(classes))
    return cfg
