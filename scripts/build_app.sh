#!/usr/bin/env bash
# Build the one-folder DDPM Studio app with PyInstaller (build_app.spec), then smoke-test it with --self-test.
#
#   scripts/build_app.sh                 # with the Python of .venv (or $PYTHON)
#   scripts/build_app.sh --cpu-torch     # Linux: in build/bundle-venv with CPU-only torch (a far smaller bundle)
#
# Output: dist/ddpm-studio/ (Linux) or "dist/DDPM Studio.app" (macOS), and dist/build-report.txt with the
# bundle's size, the build time and the self-test time. Environment:
#   PYTHON                  the Python whose packages go into the bundle (default .venv/bin/python)
#   CPU_TORCH_SPEC          what --cpu-torch installs (default: torch and torchvision from PyTorch's CPU index)
#   DDPM_STUDIO_CODESIGN_IDENTITY, DDPM_STUDIO_TARGET_ARCH   see build_app.spec (macOS)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
CPU_TORCH_SPEC=${CPU_TORCH_SPEC:-"torch torchvision --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple"}
SELF_TEST=1

for arg in "$@"; do
  case $arg in
    --cpu-torch)
      VENV=$ROOT/build/bundle-venv
      if [ ! -x "$VENV/bin/python" ]; then
        echo "Creating $VENV with CPU-only torch ($CPU_TORCH_SPEC)"
        "$PYTHON" -m venv "$VENV"
        # shellcheck disable=SC2086 # the spec is a list of pip arguments
        "$VENV/bin/pip" install -q $CPU_TORCH_SPEC
        "$VENV/bin/pip" install -q "$ROOT[bundle]"
      fi
      PYTHON=$VENV/bin/python ;;
    --no-self-test) SELF_TEST=0 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

"$PYTHON" -c "import PyInstaller" 2>/dev/null || "$PYTHON" -m pip install -q "pyinstaller>=6.10"
"$PYTHON" - <<'PY'
import torch
cuda = torch.version.cuda
print(f"Bundling torch {torch.__version__}" + (f" (CUDA {cuda}: its NVIDIA libraries are linked by torch and go in too; "
      "use --cpu-torch for a CPU-only bundle)" if cuda else " (CPU only)"))
PY

start=$(date +%s)
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$ROOT/dist" --workpath "$ROOT/build/pyinstaller" "$ROOT/build_app.spec"
build_s=$(( $(date +%s) - start ))

if [ "$(uname)" = Darwin ]; then
  BUNDLE="$ROOT/dist/DDPM Studio.app"; EXE="$BUNDLE/Contents/MacOS/DDPM Studio"
else
  BUNDLE="$ROOT/dist/ddpm-studio"; EXE="$BUNDLE/ddpm-studio"
fi
size=$(du -sh "$BUNDLE" | cut -f1)
files=$(find "$BUNDLE" -type f | wc -l)
report="bundle: $BUNDLE
size: $size in $files files
build time: ${build_s} s (PyInstaller $("$PYTHON" -c 'import PyInstaller; print(PyInstaller.__version__)'), $(nproc 2>/dev/null || sysctl -n hw.ncpu) CPUs)"

if [ $SELF_TEST = 1 ]; then
  start=$(date +%s)
  # No display needed: the self-test uses Qt's offscreen platform. Run from / so nothing resolves to the checkout.
  (cd / && env -u DISPLAY -u WAYLAND_DISPLAY "$EXE" --self-test)
  report="$report
self-test: passed in $(( $(date +%s) - start )) s (wall clock, including the bundle's start-up)"
fi
echo "$report" | tee "$ROOT/dist/build-report.txt"
