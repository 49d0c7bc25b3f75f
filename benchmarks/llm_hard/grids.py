"""Methods of the hard LLM track and their validation grids (a row here adds a method).

Every method of the package in its best known configuration (AWD α 0.01 as on the quick track and
MiniLM; tensor and row scope; in front of each method it can combine) and mergekit's task_arithmetic,
ties, dare_ties, della and breadcrumbs_ties, each λ chosen on validation.  Eight task vectors add up to
a larger update than the quick track's four (and the hard track's fine-tunes are far stronger), so the
summing methods' λ grids reach down to 0.05; the methods that divide by the (agreeing) weights or rescale
their spectrum get wide grids around the λ the quick track chose (``llm_quality.json``: iso_c and iso_cts
4.0, ace 2.0, tsv 1.0, wudi 1.0–1.3).  Each grid is hill-climbed from its middle λ
(``harness.selection.climb``: the start, its neighbours, then further while the validation score rises;
the validation scoring of 1,024 lines is much of a row's cost).  Parameters not listed keep their
defaults.  Rows of methods not registered are left out.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from benchmarks.harness.grids import MethodGrid, specs

# strong fine-tunes: task_arithmetic's first run chose λ 0.2, the lowest point of (0.2 … 1.0), at 38.6 %
# normalized validation: the summing grids reach down to 0.05 and every grid is wide (the climb scores few)
SUM_LAMBDAS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)     # task_arithmetic, dare_ties, breadcrumbs_ties
AWD_LAMBDAS = (0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)  # awd: removing δ shrinks Σ τ_i, λ may need to grow
MEAN_LAMBDAS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5)  # ties, della: divided by Σ agreeing weights (della chose
#                                                     0.3, the lowest of 0.3 … 1.5, in the first run)
SPECTRUM_LAMBDAS = (0.2, 0.3, 0.5, 0.7, 1.0, 1.5)  # tsv, wudi
ISO_LAMBDAS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0)       # iso_c, iso_cts: the quick track chose 4.0, its grid's end
ACE_LAMBDAS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)       # ace: a weighted mean of the updates; K = 4 chose 2.0
SPARSIFIED: Dict[str, Tuple[Dict[str, float], Tuple[float, ...]]] = {
    "ties": ({"density": 0.5}, MEAN_LAMBDAS),
    "dare_ties": ({"density": 0.5}, SUM_LAMBDAS),
    "della": ({"density": 0.5}, MEAN_LAMBDAS),
    "breadcrumbs_ties": ({"density": 0.9, "gamma": 0.01}, SUM_LAMBDAS),
}
MATRIX_METHODS: Dict[str, Tuple[Dict[str, object], Tuple[float, ...]]] = {  # row -> (method and parameters, λ)
    "tsv": ({"method": "tsv"}, SPECTRUM_LAMBDAS),
    "wudi_adam": ({"method": "wudi", "solver": "adam"}, SPECTRUM_LAMBDAS),
    "wudi_exact": ({"method": "wudi", "solver": "exact"}, SPECTRUM_LAMBDAS),
    "iso_c": ({"method": "iso_c"}, ISO_LAMBDAS),
    "iso_cts": ({"method": "iso_cts"}, ISO_LAMBDAS),
    "ace": ({"method": "ace"}, ACE_LAMBDAS),
}
AWD_ALPHA = 0.01
# the K sweep's methods; "best awd" and "wudi" are the rows of those families with the best validation score
K_SWEEP_METHODS: Tuple[str, ...] = ("task_arithmetic", "ties", "best_awd", "tsv", "best_wudi", "iso_cts")


def _grid(name: str, method: str, shared: Dict, per_model: Dict, lambdas: Sequence[float]) -> MethodGrid:
    """One row, hill-climbed from its grid's middle λ."""
    return MethodGrid(name, specs(method, [shared], [per_model]), tuple(lambdas), climb_from=lambdas[len(lambdas) // 2])


def hard_grids(registered: Sequence[str]) -> List[MethodGrid]:
    """Every row of the hard track (see the module docstring)."""
    grids = [_grid("task_arithmetic", "task_arithmetic", {}, {}, SUM_LAMBDAS)]
    grids += [_grid(name, name, {}, per_model, lambdas) for name, (per_model, lambdas) in SPARSIFIED.items()]
    grids += [_grid("awd_tensor", "awd", {"scope": "tensor", "alpha": AWD_ALPHA}, {}, AWD_LAMBDAS),
              _grid("awd_row", "awd", {"scope": "row", "alpha": AWD_ALPHA}, {}, AWD_LAMBDAS)]
    grids += [_grid(f"awd_{name}", "awd", {"combine": name, "alpha": AWD_ALPHA}, per_model, lambdas)
              for name, (per_model, lambdas) in SPARSIFIED.items()]
    for row, (spec, lambdas) in MATRIX_METHODS.items():
        parameters = {k: v for k, v in spec.items() if k != "method"}
        method = str(spec["method"])
        if method not in registered:
            continue
        grids.append(_grid(row, method, parameters, {}, lambdas))
        if _awd_in_front(row):
            combine = {"combine": method, "alpha": AWD_ALPHA, **({"combine_solver": "exact"} if method == "wudi" else {})}
            grids.append(_grid(f"awd_{method}", "awd", combine, {}, lambdas))
    return grids


def _awd_in_front(row: str) -> bool:
    """Whether the row also runs with AWD in front: wudi with its exact solver only (the same minimiser, faster)."""
    return row != "wudi_adam"


def combine_pairs(registered: Sequence[str]) -> List[Tuple[str, str]]:
    """(AWD in front of X, X) for every X the track runs both ways: the rows whose difference tells whether
    AWD helps X (issue #27: AWD + X ≥ X)."""
    pairs = [(f"awd_{name}", name) for name in SPARSIFIED]
    return pairs + [(f"awd_{spec['method']}", row) for row, (spec, _) in MATRIX_METHODS.items()
                    if spec["method"] in registered and _awd_in_front(row)]


__all__ = ["hard_grids", "combine_pairs", "K_SWEEP_METHODS", "SUM_LAMBDAS", "AWD_LAMBDAS", "MEAN_LAMBDAS", "SPECTRUM_LAMBDAS", "ISO_LAMBDAS",
           "ACE_LAMBDAS"]
