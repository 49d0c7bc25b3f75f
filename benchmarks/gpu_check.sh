#!/usr/bin/env bash
# The GPU check, at most ~8 minutes on one GPU. Run it on a machine with CUDA, from the repository root:
#   bash benchmarks/gpu_check.sh            (output: benchmarks/results/gpu_check.log and llm_scale_cuda.*)
# 1. the CUDA tests (tests/test_cuda.py: every method merged with --cuda equals the CPU merge) and the
#    device pre-flight tests;
# 2. the LLM-scale per-tensor benchmark on cuda (K = 2, 4, 8);
# 3. a --cuda merge of a SmolLM2-shaped family (the LLM track's fine-tunes when cached, else synthetic
#    models of SmolLM2-135M's shapes) by awd, tsv and iso_cts, each compared tensor by tensor with the
#    CPU merge of the same config.
# Python: the first of $PYTHON, .venv/bin/python, python3 that imports torch with CUDA.  When mergekit
# is missing there (a bare CUDA image), wheels placed in .gpu_wheels/ are installed without an index:
#   pip download --no-deps -d .gpu_wheels mergekit==0.1.5 immutables==0.21 ...   (on a machine with a registry)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results}"
LOG="$OUT_DIR/gpu_check.log"
mkdir -p "$OUT_DIR"
exec > >(tee "$LOG") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

PY=""
for candidate in "${PYTHON:-}" .venv/bin/python python3; do
    if [ -n "$candidate" ] && "$candidate" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
        PY="$candidate"; break
    fi
done
if [ -z "$PY" ]; then
    echo "gpu_check: no Python with a CUDA-enabled torch found (tried \$PYTHON, .venv/bin/python, python3)"; exit 1
fi
if ! "$PY" -c "import mergekit" 2>/dev/null; then
    if ls .gpu_wheels/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install --quiet --no-index --no-deps .gpu_wheels/*.whl || exit 1
    else
        echo "gpu_check: mergekit is not installed for $PY and .gpu_wheels/ holds no wheels"; exit 1
    fi
fi
"$PY" -m pip install --quiet --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH="$PWD"
"$PY" - <<'EOF'
import torch, transformers, mergekit_awd
print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"transformers {transformers.__version__}")
EOF
date
status=0

echo "== 1. CUDA-capable tests"
timeout 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_devices.py -x || status=1

echo "== 2. LLM-scale per-tensor benchmark on cuda"
timeout 200 "$PY" -m benchmarks.bench_llm_scale --device cuda || status=1
[ -f benchmarks/results/llm_scale_cuda.md ] && cp benchmarks/results/llm_scale_cuda.* "$OUT_DIR"/ 2>/dev/null

echo "== 3. --cuda merge of a SmolLM2-shaped family vs the CPU merge"
timeout 150 "$PY" -m benchmarks.gpu_merge_check || status=1
date
echo "gpu_check: exit $status"
exit $status
