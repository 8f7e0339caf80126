#!/usr/bin/env bash
# Create .venv and install arpg with its test extras. Idempotent: re-running only fills in what is missing.
#
# torch: where no CUDA GPU is visible we install the CPU build. On the project's machines the CPU wheel of
# torch 2.13.0 is on local disk, so `pip install torch==2.13.0` takes it; set ARPG_TORCH_SPEC to override
# (e.g. ARPG_TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu" elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    "$PY" -m venv .venv
fi
# pip byte-compiles what it installs on one core (~16 s for torch on this machine); instead we install with
# --no-compile and byte-compile once at the end on every core (~11 s). The .pyc files must exist: with
# PYTHONDONTWRITEBYTECODE set (as on CI) Python would otherwise recompile torch in every process.
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
INSTALL=("${PIP[@]}" install --no-compile)
installed=0

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    if [ -n "${ARPG_TORCH_SPEC:-}" ]; then
        spec=(${ARPG_TORCH_SPEC})
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        spec=("torch>=2.1,<3")
    else
        spec=("torch==2.13.0")
    fi
    echo "[setup] installing ${spec[*]}"
    "${INSTALL[@]}" "${spec[@]}"
    installed=1
fi

# The package itself (editable, with test extras); redone only when pyproject.toml changes.
stamp=".venv/.arpg-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import arpg" >/dev/null 2>&1; then
    echo "[setup] installing arpg (editable) with test extras"
    "${INSTALL[@]}" -e ".[test]"
    installed=1
    echo "$want" > "$stamp"
fi

# The bundled data set ships in the `animal-mnist` package; its metadata pulls TensorFlow, which we never
# import, so install it without dependencies (last, so pip's check of the other installs never sees it).
if ! .venv/bin/python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('animal_mnist') is None)" 2>/dev/null; then
    echo "[setup] installing animal-mnist (data only, --no-deps)"
    "${INSTALL[@]}" --no-deps "animal-mnist==0.4" || echo "[setup] warning: animal-mnist not installed; the bundled data set is unavailable"
fi

if [ "$installed" = 1 ]; then
    echo "[setup] byte-compiling the installed packages"
    site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    .venv/bin/python -m compileall -q -j 0 "$site" >/dev/null || true
fi

echo "[setup] done: $(.venv/bin/python -c 'import torch, arpg; print("arpg", arpg.__version__, "torch", torch.__version__)')"
