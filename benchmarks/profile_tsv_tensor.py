"""Where the time of one TSV-M merge of a 2048×768 tensor goes (K = 3, decaying spectra, 1 thread).

    python benchmarks/profile_tsv_tensor.py [--svd lowrank|exact] [--repeats 3]

Builds three task matrices U diag(σ) Vᵀ with σ_j = exp(−j/32) (the decaying family of
bench_tsv_speed.py), runs ``tsv_merge_matrices`` under cProfile and prints the functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mergekit_awd.core.tsv import TSVSettings, tsv_merge_matrices  # noqa: E402


def decaying_matrix(rows: int, cols: int, decay: float, generator: torch.Generator) -> torch.Tensor:
    left, _ = torch.linalg.qr(torch.randn(rows, cols, generator=generator))
    right, _ = torch.linalg.qr(torch.randn(cols, cols, generator=generator))
    sigma = torch.exp(-torch.arange(cols) / decay)
    return (left * sigma) @ right.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--svd", default="lowrank", choices=("lowrank", "exact"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    matrices = [decaying_matrix(2048, 768, 32.0, generator) for _ in range(3)]
    settings = TSVSettings(svd=args.svd)
    tsv_merge_matrices(matrices, None, settings)  # warm-up
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(args.repeats):
        tsv_merge_matrices(matrices, None, settings)
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
