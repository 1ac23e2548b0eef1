#!/usr/bin/env bash
# The GPU check of factorconv: run from anywhere in the repository on a machine with CUDA; one command, no
# questions, at most 8 minutes. It
#   1. finds a Python whose torch sees a GPU: .venv's, else the system python3 (with this checkout on
#      PYTHONPATH, nothing installed), else it sets .venv up with the build at $FACTORCONV_TORCH_INDEX
#      (e.g. https://download.pytorch.org/whl/cu126);
#   2. runs the tests that need CUDA (pytest -m cuda);
#   3. runs `factorconv bench ops` and `bench models` with --device cuda;
#   4. runs a 3-operator study at a small preset on cuda;
# and writes benchmarks/results/*_cuda.{md,json} and benchmarks/results/device_check_cuda.md.
#
#   bash scripts/device_check.sh           # the check
#   bash scripts/device_check.sh --help    # this text
#
# Without a GPU it says so and exits with status 3, having changed nothing.
set -euo pipefail

cd "$(dirname "$0")/.."
for arg in "$@"; do
    case "$arg" in
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "device_check.sh: unknown option '$arg' (it takes none; --help explains)" >&2; exit 2 ;;
    esac
done

say() { printf '[device_check] %s\n' "$*"; }
has_cuda() { "$1" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; }

# 1. a Python with CUDA
PY=""
if [ -x .venv/bin/python ] && has_cuda .venv/bin/python; then
    PY=.venv/bin/python
elif command -v python3 >/dev/null && has_cuda python3; then
    PY=python3
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
elif [ -n "${FACTORCONV_TORCH_INDEX:-}" ]; then
    say "setting up .venv with torch from $FACTORCONV_TORCH_INDEX"
    bash scripts/setup.sh --dev
    has_cuda .venv/bin/python && PY=.venv/bin/python
fi
if [ -z "$PY" ]; then
    found=$( (python3 -c "import torch; print('torch', torch.__version__)" 2>/dev/null || echo "no torch") | tail -1)
    echo "device_check.sh: no CUDA device: no Python here has a torch that sees a GPU (python3: $found," \
         "torch.cuda.is_available() is False); run this on a machine with an NVIDIA GPU, or set" \
         "FACTORCONV_TORCH_INDEX to a CUDA build's index (https://download.pytorch.org/whl/cu126) to install one" >&2
    exit 3
fi

OUT=benchmarks/results
mkdir -p "$OUT" runs
REPORT="$OUT/device_check_cuda.md"
GPU=$("$PY" -c "import torch; print(torch.cuda.get_device_name(), '| torch', torch.__version__, '| CUDA', torch.version.cuda)")
say "using $PY: $GPU"
started=$(date +%s)
step() {  # step NAME SECONDS COMMAND...: run with a time limit, record status and minutes
    local name=$1 limit=$2; shift 2
    local t0; t0=$(date +%s)
    say "$name"
    set +e
    timeout "$limit" "$@" > "runs/device_check_${name// /_}.log" 2>&1
    local rc=$?
    set -e
    echo "| $name | $rc | $(( $(date +%s) - t0 )) s | \`$*\` |" >> "$REPORT.rows"
    [ "$rc" = 0 ] || FAILED=1
    tail -n 5 "runs/device_check_${name// /_}.log" | sed 's/^/    /'
}
: > "$REPORT.rows"
FAILED=0

# 2-4. the checks, each within its share of the 8 minutes
step "cuda tests" 120 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
step "bench ops" 120 "$PY" -m factorconv bench ops --device cuda --out "$OUT"
step "bench models" 90 "$PY" -m factorconv bench models --device cuda --out "$OUT"
study=runs/device-check-cuda-study
step "study" 120 "$PY" -m factorconv compare --convs conv,dsep,osep --seeds 2 --set steps=200 --set device=cuda \
    --out "$study"
if [ -f "$study/results.json" ]; then
    "$PY" benchmarks/record_compare.py "$study" compare_cuda --wall "see device_check_cuda.md" \
        --command "factorconv compare --convs conv,dsep,osep --seeds 2 --set steps=200 --set device=cuda" \
        > /dev/null 2>&1 || true
fi

{
    echo "# scripts/device_check.sh"
    echo
    echo "Machine: $GPU; $(date -u '+%Y-%m-%d %H:%M UTC'); $(( $(date +%s) - started )) s in all."
    echo
    echo "| step | exit status | time | command |"
    echo "|---|---|---|---|"
    cat "$REPORT.rows"
    echo
    echo "Outputs: bench_ops_cuda.md, bench_models_cuda.md, compare_cuda.md in this directory; logs under runs/."
} > "$REPORT"
rm -f "$REPORT.rows"
say "wrote $REPORT"
exit "$FAILED"
