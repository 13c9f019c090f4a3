"""``ddpm-studio --self-test`` (the bundle's smoke test) passes from the source tree, without a display."""

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_self_test_exits_0(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "DDPM_STUDIO_RUNS_DIR")}
    env["TMPDIR"] = str(tmp_path)  # the self-test's temporary folder, removed afterwards
    proc = subprocess.run([sys.executable, "-m", "ddpm_studio", "--self-test"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=220)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for check in ("train", "sample", "window"):
        assert f"ok   {check}" in out, out
    assert "Self-test passed" in out
    assert list(tmp_path.iterdir()) == []  # cleaned up
