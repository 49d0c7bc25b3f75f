#!/usr/bin/env bash
# One-stop set-up and entry point.  On a fresh machine:
#   ./run.sh demo    create .venv (torch==2.13.0 first), install, run the embedded default merge
#                    (three MiniLM fine-tunes on real text; tune chooses λ on validation for
#                    task_arithmetic, ties, iso_cts and awd + iso_cts; test table; docs/demo.md)
#   ./run.sh demo-tiny  the same set-up, then a merge of tiny synthetic LLaMA-shaped models (seconds)
#   ./run.sh test    same set-up, then the whole test suite
#   ./run.sh quality the same set-up, then the whole merge-quality benchmark: data sources, six
#                    fine-tunes (cached in ~/.cache/mergekit-awd/benchmarks), merges, plots (docs/results.md)
#   ./run.sh llm-quality the same set-up, then the causal-LM quick track: SmolLM2-135M-Instruct from its
#                    GGUF wheel, four full fine-tunes (cached in ~/.cache/mergekit-awd/benchmarks/llm), bfloat16 merges
#                    (docs/results.md)
#   ./run.sh llm-hard the same set-up, then the hard causal-LM track (issue #27): eight strong fine-tunes
#                    (cached, resumable), every method, per-example results and intervals, K sweep
#                    (benchmarks/results/llm_hard.md); every command and its runtime: benchmarks/INDEX.md
set -euo pipefail
cd "$(dirname "$0")"
VENV="${MERGEKIT_AWD_VENV:-.venv}"

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
    # torch first, pinned: an unpinned torch pulls several GB of CUDA packages.
    if ! python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
        pip install --quiet torch==2.13.0
    fi
    pip install --quiet --disable-pip-version-check -e ".[test]"
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
}

command="${1:-}"
shift || true
case "$command" in
    demo)
        setup
        python examples/minilm_demo.py "$@"
        ;;
    quality)
        setup
        python -m benchmarks.quality.run "$@"
        ;;
    llm-quality)
        setup
        python -m benchmarks.llm.run "$@"
        ;;
    llm-hard)
        setup
        python -m benchmarks.llm_hard.run "$@"
        ;;
    demo-tiny)
        setup
        python examples/tiny_llama_demo.py "$@"
        ;;
    test)
        setup
        set +e
        python -m pytest -q "$@"
        status=$?
        set -e
        if [ "$status" -eq 5 ]; then
            echo "run.sh: pytest collected no tests: failing on purpose" >&2
            exit 1
        fi
        exit "$status"
        ;;
    setup)
        setup
        ;;
    *)
        echo "usage: ./run.sh demo|demo-tiny|test|quality|llm-quality|llm-hard|setup [args...]" >&2
        exit 2
        ;;
esac
