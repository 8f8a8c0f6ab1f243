#!/usr/bin/env bash
# Create the peers' virtual environments (idempotent): .venv-scgen (pertpy's scGen),
# .venv-scarches (scArches' PyTorch TRVAE) and .venv-cpa (cpa-tools' CPA). torch is installed
# first from the local CPU wheel and kept at 2.13.0 by passing it again as a requirement on every
# later install.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
TORCH="torch==2.13.0"

pip_install() {  # pip_install VENV ARGS...: quiet, without pip's notes on this machine's local indexes
    local venv="$1"; shift
    "$venv/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v "WARNING: Location" || true; }
}

make_venv() {  # make_venv NAME IMPORT_CHECK REQUIREMENT...  (NO_DEPS="PKG...": installed first, --no-deps)
    local name="$1" check="$2"; shift 2
    local venv="$HERE/.venv-$name"
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
        echo "[setup] .venv-$name already imports; skipping install"
    else
        echo "[setup] creating .venv-$name"
        rm -rf "$venv"
        "$PY" -m venv "$venv"
        pip_install "$venv" --upgrade pip wheel
        pip_install "$venv" "$TORCH"  # first, so nothing pulls another torch build
        if [ -n "${NO_DEPS:-}" ]; then
            # shellcheck disable=SC2086
            pip_install "$venv" --no-deps $NO_DEPS
        fi
        pip_install "$venv" "$TORCH" "$@"
        "$venv/bin/python" -c "$check"
    fi
}

# pertpy 1.0.3 imports only with statsmodels<0.15; its scGen needs scvi-tools beside it.
make_venv scgen \
    "import torch, pertpy, scvi; assert torch.__version__.startswith('2.13.0'); pertpy.tools.Scgen" \
    "pertpy==1.0.3" "statsmodels<0.15" "scvi-tools"

# scArches 0.6.1 needs the pre-numpy-2 stack and the jax 0.4.30 family.
make_venv scarches \
    "import torch, scarches, anndata; assert torch.__version__.startswith('2.13.0'); scarches.models.TRVAE" \
    "scarches==0.6.1" "numpy<2" "anndata<0.11" "scanpy<1.11" "scvi-tools<1.2" \
    "jax==0.4.30" "jaxlib==0.4.30" "flax==0.8.5" "optax==0.2.3" "orbax-checkpoint<0.6" \
    "numpyro<0.16" "chex<0.1.87" "ml_dtypes<0.5"

# cpa-tools 0.8.1 (the registry's newest) declares torch<2.0 and scvi-tools<1.0, and dev tools
# (black, flake8, jupyter, pytest) as requirements: it is installed --no-deps on torch 2.13.0, with
# what it imports. scvi-tools 0.20.3 is the newest <1.0; its pytorch-lightning<1.10 is needed too
# (CPA's training plan uses the *_epoch_end hooks that Lightning 2.0 removed), lightning 1.9 imports
# pkg_resources (setuptools<81), scvi 0.20.3 imports requests (undeclared), jaxlib.xla_extension
# (the jax 0.4.30 family, as for scArches), and np.Inf (numpy<2); anndata<0.10 as CPA's GitHub
# main pins it. rdkit-pypi, seaborn, scanpy, adjustText: imported by cpa. Needs Python's tkinter.
NO_DEPS="cpa-tools==0.8.1" make_venv cpa \
    "import torch, cpa, scvi; assert torch.__version__.startswith('2.13.0'); assert scvi.__version__ == '0.20.3'; cpa.CPA" \
    "scvi-tools==0.20.3" "pytorch-lightning<1.10" "setuptools<81" "requests" "numpy<2" \
    "anndata<0.10" "jax==0.4.30" "jaxlib==0.4.30" "flax==0.8.5" "optax==0.2.3" \
    "orbax-checkpoint<0.6" "numpyro<0.16" "chex<0.1.87" "ml_dtypes<0.5" \
    "rdkit-pypi" "seaborn" "scanpy" "adjustText" "importlib-metadata"

freeze() {  # freeze NAME PACKAGE-REGEX
    "$HERE/.venv-$1/bin/python" -m pip freeze | grep -iE "^($2)==" > "$HERE/versions-$1.txt" || true
    echo "[setup] wrote versions-$1.txt"
}
freeze scgen "torch|pertpy|scvi-tools|anndata|scanpy|numpy|scipy|pandas|lightning|statsmodels|jax|jaxlib|flax"
freeze scarches "torch|scarches|scvi-tools|anndata|scanpy|numpy|scipy|pandas|lightning|pytorch-lightning|jax|jaxlib|flax|optax|orbax-checkpoint|numpyro|chex|ml_dtypes"
freeze cpa "torch|cpa-tools|scvi-tools|anndata|scanpy|numpy|scipy|pandas|pytorch-lightning|torchmetrics|jax|jaxlib|flax|optax|rdkit-pypi"
