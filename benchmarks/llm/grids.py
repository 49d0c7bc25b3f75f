"""Methods of the LLM track and their validation grids (one table: add a row to add a method).

A configuration costs one float32 CLI merge at λ = 1 and each λ one validation scoring, so the
grids are smaller than the MiniLM benchmark's (a validation scoring of the 135M model takes about
16 s on two cores: ``benchmarks/llm/bench_scoring.py`` measured 15.8 s for the four tasks, 23.0 s
without the evaluator's shared-prefix batching): one density for the TIES family (0.5, the earlier runs' choice over 0.2) and one α
for AWD (0.01), so that the whole track fits about an hour.  Parameters not listed keep mergekit's / mergekit_awd's defaults
(``ties`` and ``della`` divide by the agreeing weights, ``dare_ties`` and ``breadcrumbs_ties`` add;
DARE/DELLA ``rescale: true``, AWD's solver, ``select``).
Methods registered later are picked up by name, as in ``benchmarks.quality.grids``: a row here,
guarded by its registered name.

``wudi`` runs with both solvers: ``wudi_adam`` (its default, the reference's 300 Adam steps per matrix,
about 50 TFLOP for the 210 matrices of this model with the closed-form gradient: several minutes on two
cores) and ``wudi_exact``.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from benchmarks.harness.grids import MethodGrid, specs

TA_LAMBDAS = (0.3, 0.5, 0.7, 1.0)
AWD_LAMBDAS = (0.3, 0.5, 0.7, 1.0, 1.3)      # removing δ shrinks Σ τ_i: λ may need to grow
MEAN_LAMBDAS = (0.7, 1.0, 1.5, 2.0, 2.5)  # ties, della: divided by Σ agreeing weights
TSV_LAMBDAS = (0.5, 1.0, 1.5, 2.0)
ISO_LAMBDAS = (1.0, 1.5, 2.0, 3.0, 4.0)  # 3.0, the largest before, was chosen: the grid goes one step further
WUDI_LAMBDAS = (0.5, 0.7, 1.0, 1.3, 1.6)  # both solvers chose 1.0, then the grid's largest
ACE_LAMBDAS = (0.7, 1.0, 1.5, 2.0, 3.0)  # ACE's update is a weighted mean (reference λ 1.0): K = 4 sums need ~2
# mergekit's sparsifying methods, alone and with AWD in front: per-model parameters and λ grid
SPARSIFIED: Dict[str, Tuple[Dict[str, float], Tuple[float, ...]]] = {
    "ties": ({"density": 0.5}, MEAN_LAMBDAS),
    "dare_ties": ({"density": 0.5}, TA_LAMBDAS),
    "della": ({"density": 0.5}, MEAN_LAMBDAS),
    "breadcrumbs_ties": ({"density": 0.9, "gamma": 0.01}, TA_LAMBDAS),
}
AWD_ALPHAS = (0.01,)  # the MiniLM benchmark's and the earlier LLM runs' choice (0.1 lost on validation)


def _grid(name: str, method: str, shared: Sequence[Dict], per_model: Sequence[Dict], lambdas) -> MethodGrid:
    return MethodGrid(name, specs(method, shared, per_model), tuple(lambdas))


def llm_grids(registered: Sequence[str]) -> List[MethodGrid]:
    grids = [
        _grid("task_arithmetic", "task_arithmetic", [{}], [{}], TA_LAMBDAS),
        *(_grid(name, name, [{}], [per_model], lambdas) for name, (per_model, lambdas) in SPARSIFIED.items()),
        _grid("awd_tensor", "awd", [{"scope": "tensor", "alpha": a} for a in AWD_ALPHAS], [{}], AWD_LAMBDAS),
        _grid("awd_model", "awd", [{"scope": "model", "alpha": 0.03}], [{}], AWD_LAMBDAS),
        _grid("awd_row", "awd", [{"scope": "row", "alpha": 0.01}], [{}], AWD_LAMBDAS),
    ]
    if "tsv" in registered:
        grids.append(_grid("tsv", "tsv", [{}], [{}], TSV_LAMBDAS))
        grids.append(_grid("tsv_disentangled", "tsv", [{"disentangle": True}], [{}], TSV_LAMBDAS))
    # AWD in front of mergekit's sparsifying methods and of TSV-M (awd's combine, issue #14), with the
    # sparsifying method's own parameters and λ grid
    grids += [_grid(f"awd_{name}", "awd", [{"combine": name, "alpha": 0.01}], [per_model], lambdas)
              for name, (per_model, lambdas) in SPARSIFIED.items()]
    if "tsv" in registered:
        grids.append(_grid("awd_row_tsv", "awd", [{"combine": "tsv", "scope": "row", "alpha": 0.01}], [{}],
                           TSV_LAMBDAS))
    if "wudi" in registered:
        grids.append(_grid("wudi_adam", "wudi", [{"solver": "adam"}], [{}], WUDI_LAMBDAS))
        grids.append(_grid("wudi_exact", "wudi", [{"solver": "exact"}], [{}], WUDI_LAMBDAS))
    for iso in ("iso_c", "iso_cts"):
        if iso in registered:
            grids.append(_grid(iso, iso, [{}], [{}], ISO_LAMBDAS))
    if "ace" in registered:  # issue #28: the reference's ACE and AWD in front of it
        grids.append(_grid("ace", "ace", [{}], [{}], ACE_LAMBDAS))
        grids.append(_grid("awd_ace", "awd", [{"combine": "ace", "alpha": 0.01}], [{}], ACE_LAMBDAS))
    return grids
