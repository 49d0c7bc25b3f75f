#!/usr/bin/env bash
# The GPU check, at most ~9 minutes on one GPU. Run it on a machine with CUDA, from the repository root:
#   bash benchmarks/gpu_check.sh     (output: $OUT or benchmarks/results/gpu_check/: gpu_check.log,
#                                     llm_scale_cuda.{json,md}, peer_speed_cuda.{json,md})
# 1. the CUDA tests (tests/test_cuda.py: every method, awd's row scope, sgd and combine included, merged with
#    --cuda equals the CPU merge) and the device pre-flight tests;
# 2. the LLM-scale per-tensor benchmark on cuda (Llama-3-8B shapes; every method at K = 2, the fast ones at
#    K = 4 and 8 while its time budget lasts);
# 3. a --cuda merge of a SmolLM2-shaped family (the LLM track's fine-tunes when cached, else synthetic
#    models of SmolLM2-135M's shapes) by awd (each scope, and in front of ties), tsv, iso_cts and wudi exact,
#    each compared tensor by tensor with the CPU merge of the same config;
# 4. the peers' speed benchmark with --cuda: task_arithmetic, wudi exact, wudi with the reference's Adam run
#    whole, awd row (each merge a fresh process; the other rows are the CPU benchmark's).
# Each step has its own time limit; a step that fails or runs out is reported and the next one runs.
# Python: the first of $PYTHON, .venv/bin/python, python3 that imports torch with CUDA.  When mergekit
# is missing there (a bare CUDA image), the wheels in .gpu_wheels/ are installed without an index (the
# versions of the CPU set-up, for CPython 3.12 on x86-64; on a machine with a registry):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     -d .gpu_wheels mergekit==0.1.5 immutables==0.21 pydantic==2.14.4 pydantic_core==2.50.5 \
#     annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 transformers==5.25.0 \
#     huggingface_hub==2.4.0 tokenizers==0.23.3 hf-xet==1.8.0 httpx2==2.16.2 httpcore2==2.16.2 \
#     truststore==0.10.5 accelerate==1.16.0 peft==0.21.2
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results/gpu_check}"
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# transformers 5.x asks for the `kernels` package on a CUDA machine unless hub kernels are off (none can be fetched there)
export USE_HUB_KERNELS=NO
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

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
        "$PY" -m pip install --quiet --no-index --no-deps --no-compile .gpu_wheels/*.whl || exit 1
    else
        echo "gpu_check: mergekit is not installed for $PY and .gpu_wheels/ holds no wheels"; exit 1
    fi
fi
"$PY" - <<'EOF' || exit 1
import torch, transformers, mergekit_awd
print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"transformers {transformers.__version__}")
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
date
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, report its exit status and wall time
    local name="$1" limit="$2"; shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit} s)"
    timeout "$limit" "$@"; local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || status=1
}

step "1. CUDA-capable tests" 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_devices.py
step "2. LLM-scale per-tensor benchmark on cuda" 150 \
    "$PY" -m benchmarks.speed.bench_llm_scale --device cuda --exact-ks 2 --budget 90
cp benchmarks/results/llm_scale_cuda.* "$OUT_DIR"/ 2>/dev/null
step "3. --cuda merge of a SmolLM2-shaped family vs the CPU merge" 110 "$PY" -m benchmarks.speed.gpu_merge_check
step "4. peers' speed benchmark with --cuda" 150 "$PY" -m benchmarks.speed.bench_peer_speed --device cuda --threads 8 \
    --methods wudi_exact wudi_adam awd_row
cp benchmarks/results/peer_speed_cuda.* "$OUT_DIR"/ 2>/dev/null
date
echo "gpu_check: exit $status"
sleep 2  # let tee write the end of the log
exit $status
