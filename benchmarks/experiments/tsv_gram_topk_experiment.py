"""Showed: Gram-eigh top-k, ~10 % faster than lowrank, breaks decaying spectra (6e-4 → 0.19): not adopted.

    python -m benchmarks.experiments.tsv_gram_topk_experiment

Experiment (not adopted): TSV-M's top-k triplets from an eigendecomposition of the small-side Gram
matrix plus Rayleigh–Ritz, instead of the randomized subspace iteration of ``svd: lowrank``.

Three 2048×768 task matrices, K = 3, k = 256, 1 thread; i.i.d. Gaussian and decaying (σ_j = exp(−j/32))
spectra.  Prints ‖Δ − Δ_exact‖/‖Δ_exact‖ of the merged task matrix and the time of one merge, for
the randomized triplets and for the Gram route with a float32 or float64 Gram matrix (whitening as in
``svd: lowrank`` in every case).  Result on the 2-core machine: the Gram route fixes the Gaussian case
only partly (0.63 → 0.036) and breaks the decaying one (6e-4 → 0.19 in float32, 0.022 in float64),
where the tail singular vectors fall below the Gram matrix's precision, for about 10 % less time in
float32 (and more time than the randomized route in float64).
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.speed.measure import decaying_matrix
from mergekit_awd.core import tsv


def gram_triplets(matrix: torch.Tensor, k: int, wide: bool):
    """Top-k (U, S, Vh) from eigh(AᵀA) on the smaller side, then the SVD of A·V_k (Rayleigh–Ritz)."""
    rows, cols = matrix.shape
    if rows < cols:
        u, s, vh = gram_triplets(matrix.T, k, wide)
        return vh.T, s, u.T
    gram = matrix.T @ matrix
    _, vectors = torch.linalg.eigh(gram.double() if wide else gram)
    top = vectors[:, -k:].flip(1).to(matrix.dtype)
    u, s, wh = torch.linalg.svd(matrix @ top, full_matrices=False)
    return u, s, wh @ top.T


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    randomized = tsv.randomized_triplets
    routes = {
        "randomized (svd: lowrank)": randomized,
        "Gram float32 + Rayleigh-Ritz": lambda a, k, *_: gram_triplets(a, k, wide=False),
        "Gram float64 + Rayleigh-Ritz": lambda a, k, *_: gram_triplets(a, k, wide=True),
    }
    for family in ("gaussian", "decaying"):
        if family == "gaussian":
            matrices = [0.01 * torch.randn(2048, 768, generator=generator) for _ in range(3)]
        else:
            matrices = [decaying_matrix(2048, 768, 32.0, generator) for _ in range(3)]
        exact = tsv.tsv_merge_matrices(matrices, None, tsv.TSVSettings(svd="exact")).delta
        for name, route in routes.items():
            tsv.randomized_triplets = route
            try:
                start = time.perf_counter()
                delta = tsv.tsv_merge_matrices(matrices, None, tsv.TSVSettings(svd="lowrank")).delta
                seconds = time.perf_counter() - start
            finally:
                tsv.randomized_triplets = randomized
            error = float((delta - exact).norm() / exact.norm())
            print(f"{family:9s} {name:30s} relative error {error:.1e}  {seconds:.2f} s")


if __name__ == "__main__":
    main()
