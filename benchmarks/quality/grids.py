"""Methods of the benchmark and their validation grids.

A method is a list of configurations (everything but λ) and a λ grid; each configuration costs one
CLI merge (at λ = 1), each λ one validation scoring (see ``lambda_path``).  Parameters not listed
keep mergekit's / mergekit_awd's defaults: TIES and DELLA divide by the agreeing weights
(``normalize: true``), DARE/DELLA rescale kept entries (``rescale: true``), DELLA ε = 0.15, AWD
the package defaults (``mergekit_awd.mergekit_adapter.awd_method``: optimizer, steps, lr, units,
select), recorded per merge from its awd_report.json.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

from benchmarks.harness.grids import MethodGrid, specs
from benchmarks.harness.merging import MergeSpec


TA_LAMBDAS = (0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.7, 1.0)  # task arithmetic: adds K task vectors
SUM_LAMBDAS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)     # DARE-TIES: adds K (sparsified) vectors
MEAN_LAMBDAS = (0.3, 0.45, 0.6, 0.8, 1.0, 1.4, 2.0, 3.0)     # TIES, DELLA: divide by Σ agreeing weights
TSV_LAMBDAS = (0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)          # TSV-M: θ_base + λ Δ_M (paper: λ = 1)
AWD_LAMBDAS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.7, 1.0)
VARIANT_LAMBDAS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5)           # AWD diagnostics: the low-λ part of AWD_LAMBDAS
ISO_LAMBDAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)  # Iso-C/CTS: a flat spectrum, smaller in norm than Σ τ_i
# (4.0 and 5.0 added after quality_peers chose 3.0, the old grid's edge, for both)
ACE_LAMBDAS = ISO_LAMBDAS  # ACE: θ_base + λ·B A⁻¹, a weighted mean of the updates (reference λ = 1) plus, when
# heterogeneous, an isotropic correction; the iso grid spans both sides of 1
ACE_EPSILONS = (1e-2, 1e-3, 1e-4, 1e-6)  # ace_eps: the reference's 1e-2 and smaller
ISO_CTS_FRACTIONS = (0.5, 0.65, 0.8, 0.9)  # iso_cts_fraction: the common subspace's share (the reference fixes 0.8)
AWD_ALPHAS = (0.01, 0.03, 0.1)
SELECTS = ("block_linear", "matrices")                        # the package default; the references' every 2-D tensor
DENSITIES = (0.2, 0.4)
# mergekit's sparsifying methods, alone and with AWD in front (combine_grids), and their λ grids
SPARSIFIED_LAMBDAS = {"ties": MEAN_LAMBDAS, "dare_ties": SUM_LAMBDAS, "della": MEAN_LAMBDAS,
                      "breadcrumbs_ties": MEAN_LAMBDAS}


def standard_grids() -> List[MethodGrid]:
    return [
        MethodGrid("task_arithmetic", specs("task_arithmetic", [{}], [{}]), TA_LAMBDAS),
        *(MethodGrid(name, specs(name, [{}], [{"density": d} for d in DENSITIES]), lambdas)
          for name, lambdas in SPARSIFIED_LAMBDAS.items()),
        MethodGrid("awd_tensor", specs("awd", [{"scope": "tensor", "alpha": a} for a in AWD_ALPHAS], [{}]),
                   AWD_LAMBDAS),
        MethodGrid("awd_model", specs("awd", [{"scope": "model", "alpha": a} for a in AWD_ALPHAS], [{}]),
                   AWD_LAMBDAS),
    ]


def optional_grids(registered: Sequence[str]) -> List[MethodGrid]:
    """Methods written elsewhere in the project, benchmarked when mergekit knows them.

    To add one: a MethodGrid here, guarded by its registered name.
    """
    grids: List[MethodGrid] = []
    if "tsv" in registered:
        grids.append(MethodGrid("tsv", specs("tsv", [{}], [{}]), TSV_LAMBDAS))
        # TSV-M on AWD-disentangled task vectors (tsv's `disentangle`, awd solver defaults)
        grids.append(MethodGrid("tsv_disentangled", specs("tsv", [{"disentangle": True}], [{}]), TSV_LAMBDAS))
    if "wudi" in registered:
        # WUDI from Σ τ_i: the reference's early-stopped Adam, and the exact minimiser (same scale: λ ~ TA's)
        grids.append(MethodGrid("wudi_adam", specs("wudi", [{"solver": "adam", "select": s} for s in SELECTS], [{}]),
                                TA_LAMBDAS))
        grids.append(MethodGrid("wudi_exact", specs("wudi", [{"solver": "exact", "select": s} for s in SELECTS],
                                                     [{}]), TA_LAMBDAS))
    for iso in ("iso_c", "iso_cts"):
        if iso in registered:
            grids.append(MethodGrid(iso, specs(iso, [{"select": s} for s in SELECTS], [{}]), ISO_LAMBDAS))
    if "ace" in registered:  # the reference's ACE, then each option where the reference looks wrong (issue #28)
        grids.append(MethodGrid("ace", specs("ace", [{"select": s} for s in SELECTS], [{}]), ACE_LAMBDAS))
        grids.append(MethodGrid("ace_uncentred", specs("ace", [{"select": s, "b_update": "uncentred"}
                                                                for s in SELECTS], [{}]), ACE_LAMBDAS))
        grids.append(MethodGrid("ace_mean_covariance", specs("ace", [{"select": s, "prior": "mean_covariance"}
                                                                      for s in SELECTS], [{}]), ACE_LAMBDAS))
        # the reference's ε is absolute (squared weight units): smaller ones for small task vectors
        grids.append(MethodGrid("ace_eps", specs("ace", [{"eps": e} for e in ACE_EPSILONS], [{}]), ACE_LAMBDAS))
    if "iso_cts" in registered:  # Iso-CTS with its common_space_fraction chosen on validation as well
        grids.append(MethodGrid("iso_cts_fraction", specs("iso_cts", [{"select": s, "common_space_fraction": f}
                                                                     for s in SELECTS for f in ISO_CTS_FRACTIONS], [{}]),
                                ISO_LAMBDAS))
    return grids


COMBINE_SCOPES = ("tensor", "row")


def combine_grids(registered: Sequence[str]) -> List[MethodGrid]:
    """AWD at the authors' granularity (``scope: row``) and AWD in front of mergekit's sparsifying
    methods, TSV-M and Iso-CTS (``combine``, issues #14 and #15), each with the density and λ grids of
    the method that combines."""
    grids = [MethodGrid("awd_row", specs("awd", [{"scope": "row", "alpha": a} for a in AWD_ALPHAS], [{}]),
                        AWD_LAMBDAS)]
    for combine, lambdas in SPARSIFIED_LAMBDAS.items():
        grids.append(MethodGrid(f"awd_{combine}", specs("awd", [{"combine": combine, "scope": s} for s in COMBINE_SCOPES],
                                                         [{"density": d} for d in DENSITIES]), lambdas))
    if "tsv" in registered:  # scope tensor in front of TSV-M is tsv_disentangled
        grids.append(MethodGrid("awd_row_tsv", specs("awd", [{"combine": "tsv", "scope": "row"}], [{}]),
                                TSV_LAMBDAS))
    if "iso_cts" in registered:  # AWD in front of the strongest peer (issue #15), over iso_cts's own select grid
        grids.append(MethodGrid("awd_iso_cts", specs("awd", [{"combine": "iso_cts", "scope": s, "select": sel}
                                                              for s in COMBINE_SCOPES for sel in SELECTS], [{}]),
                                ISO_LAMBDAS))
    if "ace" in registered:  # AWD in front of ACE (issue #28)
        grids.append(MethodGrid("awd_ace", specs("awd", [{"combine": "ace", "scope": s, "select": sel}
                                                          for s in COMBINE_SCOPES for sel in SELECTS], [{}]),
                                ACE_LAMBDAS))
    return grids


def all_grids(registered: Sequence[str]) -> List[MethodGrid]:
    return standard_grids() + optional_grids(registered) + combine_grids(registered)


def awd_variants(chosen: MergeSpec) -> List[Tuple[str, MergeSpec]]:
    """Diagnostics around the chosen AWD configuration: one knob changed at a time.

    ``select`` widens disentanglement beyond the block weights (embeddings, pooler, then biases and
    norms); ``optimizer: gd`` is the paper's Algorithm 1; more ``steps`` tests convergence; ``alpha``
    outside the main grid tests the ‖δ‖ penalty's scale; ``alpha: 0`` removes it.
    """
    base = {k: v for k, v in chosen.parameters.items() if k != "lambda"}

    def variant(**changes: object) -> MergeSpec:
        return MergeSpec("awd", {**base, **changes}, dict(chosen.model_parameters))

    return [
        ("select: matrices", variant(select="matrices")),
        ("select: all", variant(select="all")),
        ("optimizer: gd, lr 0.1", variant(optimizer="gd", lr=0.1)),
        ("steps: 300", variant(steps=300)),
        ("steps: 1000", variant(steps=1000)),
        ("alpha: 0", variant(alpha=0.0)),
        ("alpha: 0.3", variant(alpha=0.3)),
    ]
