"""``python -m benchmarks.experiments.solver_cost``: one-thread CPU time of two K-dimensional solvers.

* ``awd`` row scope (``core.awd_rows.solve_rows``, package defaults: Adam, 100 steps) on R rows of
  K = 3 task vectors, R ∈ {256, 768, 2048, 8192}; a least-squares line time = fixed + per_row · R
  separates the per-matrix cost of the step's whole-tensor operations from the per-row arithmetic
  (docs/awd-solver.md, Fact 4).
* ``wudi`` ``solver: exact`` (``core.wudi.wudi_merge_matrices``) on K = 3 random task matrices of the
  speed model's MLP shapes, 2048×768 and 768×2048.

Best of 5 calls each; random Gaussian inputs (the costs do not depend on the values).
"""

from __future__ import annotations

import time

import torch


def _best(call, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    from mergekit_awd.core.awd import SolverSettings
    from mergekit_awd.core.awd_rows import row_grams, solve_rows
    from mergekit_awd.core.wudi import WudiParameters, wudi_merge_matrices

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    settings = SolverSettings()
    sizes, seconds = [], []
    for rows in (256, 768, 2048, 8192):
        shared = torch.randn(1, rows, 768, generator=generator)
        grams = row_grams(1e-3 * (torch.randn(3, rows, 768, generator=generator) + 0.5 * shared))
        sizes.append(rows)
        seconds.append(_best(lambda: solve_rows(grams, settings)))
        print(f"awd row solve, K = 3, {rows:5d} rows: {1000 * seconds[-1]:7.1f} ms", flush=True)
    x = torch.tensor(sizes, dtype=torch.float64)
    y = torch.tensor(seconds, dtype=torch.float64)
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    print(f"fit: {1000 * float(y.mean() - slope * x.mean()):.1f} ms per matrix + {1e6 * slope:.1f} µs per row")
    for shape in ((2048, 768), (768, 2048)):
        tasks = 1e-3 * torch.randn(3, *shape, generator=generator)
        cost = _best(lambda: wudi_merge_matrices(tasks, None, WudiParameters(solver="exact")), repeats=2)
        print(f"wudi exact, K = 3, {shape[0]}×{shape[1]}: {cost:.2f} s")


if __name__ == "__main__":
    main()
