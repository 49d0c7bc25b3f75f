"""Showed: a lowrank TSV-M merge of a 2048×768 tensor spends 48 % in randomized subspace iterations, 30 % in whitening.

    python -m benchmarks.experiments.profile_tsv_tensor [--svd lowrank|exact] [--repeats 3]

Where the time of one TSV-M merge of a 2048×768 tensor goes (K = 3, decaying spectra, 1 thread).
Builds three task matrices U diag(σ) Vᵀ with σ_j = exp(−j/32) (like the decaying family of
``benchmarks.speed.bench_tsv_speed``), runs ``tsv_merge_matrices`` under cProfile and prints the functions by
own time.  Result on the 2-core machine (``svd: lowrank``, README "Speed" under TSV): the randomized
subspace iterations take 48 % of the time and the whitening 30 % (its two float64 eigendecompositions 22 %).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

import torch

from benchmarks.speed.measure import decaying_matrix
from mergekit_awd.core.tsv import TSVSettings, tsv_merge_matrices


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
