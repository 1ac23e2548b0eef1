#!/usr/bin/env bash
# Sets up factorconv in ./.venv, idempotently: a second run only checks and returns.
#
#   bash scripts/setup.sh          # runtime: torch (CPU build if none), numpy, plot/progress/export/data/tune extras
#   bash scripts/setup.sh --dev    # the same plus pytest, hypothesis, ruff, Ray + submitit (the cluster extra),
#                                  # OpenVINO (the openvino extra: a second runtime for deploy(objective="latency"))
#                                  # and Debian's postgresql (a server the tune tests start and stop themselves)
#
# torch: when .venv cannot import torch, this installs torch==$FACTORCONV_TORCH_VERSION (default 2.13.0)
# from $FACTORCONV_TORCH_INDEX when set (e.g. https://download.pytorch.org/whl/cu126 for a CUDA build,
# https://download.pytorch.org/whl/cpu for the CPU build on a machine whose pip would pick CUDA).
# A torch already installed in .venv is never replaced.
#
# Data: the embedded data set is Fashion-MNIST from Debian's package dataset-fashion-mnist; it is installed
# with apt-get when apt exists and we may use it, otherwise this prints how to get it and carries on.
set -euo pipefail

cd "$(dirname "$0")/.."
DEV=0
for arg in "$@"; do
    case "$arg" in
        --dev) DEV=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown option '$arg' (expected --dev or --help)" >&2; exit 2 ;;
    esac
done

PY=${PYTHON:-python3}
VENV=.venv
TORCH_VERSION=${FACTORCONV_TORCH_VERSION:-2.13.0}
DATA_DIR=/usr/share/datasets/fashion-mnist

say() { printf '[setup] %s\n' "$*"; }

# pip, without the warnings some mirrors print for every index entry; fails when pip fails
pip_install() {
    "$VPY" -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    return "${PIPESTATUS[0]}"
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi
}

# 1. virtual environment
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $($PY --version 2>&1)"
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        # Debian splits venv out of the interpreter package.
        if command -v apt-get >/dev/null && as_root apt-get install -y -qq python3-venv >/dev/null; then
            "$PY" -m venv "$VENV"
        else
            echo "setup.sh: '$PY -m venv' failed; install python3-venv (Debian/Ubuntu) and run again" >&2
            exit 1
        fi
    fi
fi
VPY="$VENV/bin/python"

# 2. torch, before anything that depends on it, so pip never resolves 'torch>=2.1' to a CUDA build by itself
if ! "$VPY" -c "import torch" 2>/dev/null; then
    say "installing torch==$TORCH_VERSION"
    if [ -n "${FACTORCONV_TORCH_INDEX:-}" ]; then
        pip_install "torch==$TORCH_VERSION" --index-url "$FACTORCONV_TORCH_INDEX"
    else
        pip_install "torch==$TORCH_VERSION"
    fi
fi

# 3. the package and its extras; skipped when pyproject.toml and the extras are unchanged since the last run
EXTRAS=all
[ "$DEV" = 1 ] && EXTRAS=all,dev,cluster,openvino
STAMP="$VENV/.factorconv-setup"
CKSUM="$(cksum < pyproject.toml)"
WANT="$CKSUM $EXTRAS"
installed() { [ -f "$STAMP" ] && { grep -qxF "$WANT" "$STAMP" || { [ "$DEV" = 0 ] && grep -qxF "$CKSUM all,dev,cluster,openvino" "$STAMP"; }; }; }
if ! installed || ! "$VPY" -c "import factorconv" 2>/dev/null; then
    say "installing factorconv[$EXTRAS] (editable)"
    pip_install -e ".[$EXTRAS]"
    echo "$WANT" > "$STAMP"
fi

# 4. the embedded data set (never fatal)
if ! ls "$DATA_DIR"/train-images-idx3-ubyte* >/dev/null 2>&1; then
    if command -v apt-get >/dev/null && as_root true 2>/dev/null; then
        say "installing Fashion-MNIST (apt-get install -y dataset-fashion-mnist)"
        as_root apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
            || { as_root apt-get update -qq >/dev/null 2>&1 && as_root apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
            || say "could not install dataset-fashion-mnist with apt-get; see README 'Data' to get Fashion-MNIST"
    else
        say "Fashion-MNIST is not in $DATA_DIR: on Debian/Ubuntu run 'sudo apt-get install dataset-fashion-mnist'," \
            "or put the four IDX files (train-images-idx3-ubyte.gz ...) in a directory and pass --data-dir DIR"
    fi
fi
# 5. --dev: a PostgreSQL server binary for the tune tests' storage test (never fatal; the test skips without it)
if [ "$DEV" = 1 ] && ! command -v pg_ctl >/dev/null && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    if command -v apt-get >/dev/null && as_root true 2>/dev/null; then
        say "installing PostgreSQL for the tune tests (apt-get install -y postgresql)"
        as_root apt-get install -y -qq postgresql >/dev/null 2>&1 \
            || say "could not install postgresql with apt-get; the PostgreSQL storage test will skip"
    else
        say "no PostgreSQL here: the PostgreSQL storage test will skip (sudo apt-get install postgresql)"
    fi
fi
say "ready: $("$VPY" -c 'import torch, factorconv; print(f"factorconv {factorconv.__version__}, torch {torch.__version__}")')"
