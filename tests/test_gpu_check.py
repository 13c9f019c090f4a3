"""benchmarks/gpu_check.py: its whole path on a CPU (the smoke test CI can run), and its arithmetic.

The real run needs an NVIDIA GPU (docs/gpu.md says how to run it); here ``--device cpu --quick`` runs every
item at tiny sizes, so a change that breaks the script is caught before someone spends GPU time on it.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ddpm_studio.core.sampler_catalog import SAMPLER_NAMES

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_whole_check_runs_on_a_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=580, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {item["name"]: item["status"] for item in report["items"]}
    expected_pass = ["accelerator self-check", "every sampler in the catalog", "checkpoint → resume = uninterrupted",
                     "a NaN step is refused, never applied", "torchrun, 1 process, DDP", "no GUI packages imported",
                     "speed tiny: ours, eager", "speed tiny: ours, eager, channels_last", "sampling tiny"]
    for name in expected_pass:
        assert status.get(name) == "pass", (name, status)
    assert any(name.startswith("train tiny") and s == "pass" for name, s in status.items()), status
    assert status["fp16 autocast with loss scaling"] == "skip" and status["pytest -m gpu"] == "skip"  # need CUDA
    samplers = next(i for i in report["items"] if i["name"] == "every sampler in the catalog")["data"]
    assert sorted(samplers) == sorted(SAMPLER_NAMES)  # every sampler the catalog has, whoever added it
    resume = next(i for i in report["items"] if i["name"].startswith("checkpoint"))["data"]
    assert resume["model_max_abs_diff"] == 0 and resume["ema_max_abs_diff"] == 0  # bit-exact on a CPU
    assert any(row["library"] == "ours" and row["img_per_s"] > 0 for row in report["speed"] if "img_per_s" in row)
    doc = (tmp_path / "gpu.md").read_text()
    assert "## Correctness" in doc and "## Training speed" in doc and "## Against the target" in doc


def row(config, library, variant, img_per_s):
    return {"config": config, "library": library, "variant": variant, "batch": 128, "img_per_s": img_per_s,
            "ms_per_step": 128 / img_per_s * 1000, "first_step_s": None, "peak_bytes": 2**30, "settings": {}}


def test_the_verdict_takes_our_best_setting_against_diffusers_eager_loop():
    gpu_check = load_script()
    report = gpu_check.Report("cuda", quick=False, budget_s=1.0)
    report.env = {"matmul_TFLOPs": 800.0, "speed_precision": "bf16", "gpu": "H200", "capability": "9.0",
                  "multiprocessors": 132, "gpu_memory_GiB": 139.8}
    report.speed = [row("paper", "ours", "eager", 3000.0), row("paper", "ours", "compile", 4800.0),
                    row("paper", "diffusers", "eager (train_unconditional.py loop)", 3000.0),
                    {"config": "paper", "library": "ours", "variant": "compile, channels_last", "skipped": "budget"}]
    report.sampling = [{"config": "paper", "library": "ours", "batch": 128, "forward_ms": 5.0, "sampler_step_ms": 6.0,
                        "train_flops_per_image": 36e9, "sample_flops_per_image": 12e9}]
    verdict = gpu_check.summarize(report)
    assert verdict["paper"]["best_variant"] == "compile"
    assert verdict["paper"]["best_vs_diffusers"] == pytest.approx(1.6)
    assert verdict["paper"]["eager_vs_diffusers"] == pytest.approx(1.0)
    assert verdict["paper"]["best_share_of_matmul"] == pytest.approx(36e9 * 4800 / 1e12 / 800)  # 21.6%
    doc = gpu_check.markdown(report, verdict, "python benchmarks/gpu_check.py")
    assert "(target >= 1.5x: met)" in doc and "| paper | ours | compile, channels_last |" in doc and "budget" in doc
    report.speed[1]["img_per_s"] = 4000.0
    assert "(target >= 1.5x: NOT met)" in gpu_check.markdown(report, gpu_check.summarize(report), "cmd")
