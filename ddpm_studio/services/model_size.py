"""How big a model the settings build, and roughly how much memory training it takes (imports torch: the app
calls it off the GUI thread).

The U-Net is built on the ``meta`` device: shapes without storage, so even the 114M-parameter
preset costs milliseconds and no memory. Activation memory is the sum of every leaf module's
output during one meta forward pass, which is what autograd keeps for the backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddpm_studio.services import config as config_mod


@dataclass(frozen=True)
class Estimate:
    parameters: int
    state_bytes: int  # weights + gradients + AdamW moments + EMA copy, float32
    activation_bytes: int  # per optimisation micro-batch; 0 when unknown

    def text(self, batch_size: int) -> str:
        total = self.state_bytes + self.activation_bytes
        act = f" + ~{_mb(self.activation_bytes)} activations at batch {batch_size}" if self.activation_bytes else ""
        return (f"Model: {self.parameters / 1e6:.2f}M parameters · training memory ≈ {_mb(total)} "
                f"({_mb(self.state_bytes)} weights, gradients, optimizer and EMA{act})")


def _mb(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def estimate(cfg: config_mod.RunConfig) -> Estimate:
    """Parameters and a rough memory need of training ``cfg`` (raises ValueError for impossible layouts)."""
    import torch

    from ddpm_studio.core.unet import UNet

    ucfg = config_mod.unet_config(cfg)
    with torch.device("meta"):
        model = UNet(ucfg)
    params = sum(p.numel() for p in model.parameters())
    state = params * 4 * 5
    activations = 0
    try:
        total = [0]

        def hook(_module: object, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                total[0] += output.numel()

        handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
        b = cfg.optim.batch_size
        size, ch = cfg.data.image_size, cfg.data.channels
        with torch.device("meta"):
            model(torch.empty(b, ch, size, size), torch.zeros(b, dtype=torch.long))
        for h in handles:
            h.remove()
        # bf16/fp16 autocast keeps a mix of half and float32 tensors; "auto" may well be float32.
        activations = total[0] * (3 if cfg.optim.mixed_precision in ("bf16", "fp16") else 4)
    except Exception:  # an estimate is optional; the parameter count is still right
        activations = 0
    return Estimate(params, state, activations)


def estimate_text(cfg: config_mod.RunConfig) -> str:
    """One line for the settings panel: parameters and training memory, or why the size is unknown."""
    try:
        return estimate(cfg).text(cfg.optim.batch_size)
    except (ValueError, RuntimeError, TypeError) as exc:
        return f"Model size unknown: {exc}"
