"""``python -m benchmarks.experiments.wudi_input_rounding``: how far WUDI's exact solve moves when its
inputs are rounded to bfloat16.

The LLM track's ``wudi_exact`` row has a θ(λ) check of about 3 (its bfloat16 CLI merge against
θ_base + λ·D from the float32 merge; every other method ≤ 0.07).  This measures, on the track's own
base and four fine-tunes (~/.cache/mergekit-awd/benchmarks/llm, built when missing), for every 2-D block matrix:

* the task vectors as a float32 merge sees them, τ_i = θ_i − θ_base, and as a ``dtype: bfloat16`` merge
  sees them, bf16(θ_i) − bf16(θ_base): their relative difference ‖Δτ‖_F / ‖τ‖_F;
* ``wudi_merge_matrices`` (``solver: exact``) on both: the relative difference of the merged task vector
  and its largest entry difference, against the same for task arithmetic (Σ τ_i, amplification 1);
* cond(A) of the normal equations τ A = B (float32 inputs; A = Σ τ_iᵀτ_i / ‖τ_i‖², n × n).

Prints the ten matrices with the largest merged difference and a summary (about 80 s on 2 cores).

Result (2026-12-04, code 66b1cf54adf1): the track's task vectors are below bfloat16's resolution of the
weights: median ‖Δτ‖/‖τ‖ 1.18 over the 210 matrices (lr 3e-5 for 130 steps moves a weight by less than
its bf16 rounding), so a ``dtype: bfloat16`` merge of these float32 fine-tunes reads task vectors that are
mostly rounding.  Task arithmetic passes that through unamplified (largest entry difference 0.046); the
exact WUDI solve amplifies it where A is ill-conditioned: layer 18's o_proj (cond(A) 2.8e9, past the
Cholesky limit 1e8, so the eigenvalue cut-off 1e-12 applies) moves by 2.24 in one entry, every other
matrix by 0.104 at most.  That is the wudi_exact row's θ(λ) check.  Hub fine-tunes trained in bf16 have
bf16-exact task vectors; a cut-off tied to the inputs' precision would bound the amplification (not
adopted: it changes every exact merge and needs its own evaluation).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

import torch



def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = float(b.norm())
    return float((a - b).norm()) / scale if scale > 0 else 0.0


def main() -> Dict[str, Any]:
    from benchmarks.llm.base_model import ensure_base_model
    from benchmarks.llm.models import ensure_finetunes
    from benchmarks.llm.tasks import TASK_NAMES
    from benchmarks.harness.lambda_path import load_state
    from mergekit_awd.core.task_vectors import weighted_task_matrices
    from mergekit_awd.core.wudi import WudiParameters, normal_equations, wudi_merge_matrices

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    base = load_state(ensure_base_model())
    folders = ensure_finetunes(TASK_NAMES)
    tunes = [load_state(folders[t]) for t in TASK_NAMES]
    exact = WudiParameters(solver="exact")
    rows: List[Dict[str, Any]] = []
    for name in sorted(k for k in base if base[k].dim() == 2 and ".layers." in k):
        theta = base[name].float()
        tau32 = torch.stack([t[name].float() - theta for t in tunes])
        tau16 = torch.stack([t[name].bfloat16().float() - theta.bfloat16().float() for t in tunes])
        merged32 = wudi_merge_matrices(tau32, parameters=exact).delta.double()
        merged16 = wudi_merge_matrices(tau16, parameters=exact).delta.double()
        a, _ = normal_equations(*weighted_task_matrices(tau32.double()))
        condition = None
        if a is not None:
            values = torch.linalg.eigvalsh(a)
            condition = float(values.max() / values.min().clamp_min(1e-300))
        rows.append({
            "tensor": name, "shape": list(tau32.shape[1:]),
            "task_vector_rounding": _relative(tau16, tau32),
            "wudi_relative_difference": _relative(merged16, merged32),
            "wudi_max_abs_difference": float((merged16 - merged32).abs().max()),
            "task_arithmetic_relative_difference": _relative(tau16.sum(0), tau32.sum(0)),
            "task_arithmetic_max_abs_difference": float((tau16.sum(0) - tau32.sum(0)).abs().max()),
            "condition_A": condition,
        })
    rows.sort(key=lambda r: -r["wudi_max_abs_difference"])
    summary = {
        "matrices": len(rows),
        "median_task_vector_rounding": float(torch.tensor([r["task_vector_rounding"] for r in rows]).median()),
        "median_wudi_relative_difference": float(torch.tensor([r["wudi_relative_difference"] for r in rows]).median()),
        "max_wudi_max_abs_difference": rows[0]["wudi_max_abs_difference"],
        "max_task_arithmetic_max_abs_difference": max(r["task_arithmetic_max_abs_difference"] for r in rows),
    }
    lines = ["# WUDI exact: float32 vs bfloat16-rounded inputs (LLM track)", "",
             "`python -m benchmarks.experiments.wudi_input_rounding`: per 2-D block matrix of the SmolLM2 family, "
             "the exact WUDI solve on τ_i = θ_i − θ_base (float32) and on bf16(θ_i) − bf16(θ_base) (what a "
             "`dtype: bfloat16` merge reads); task arithmetic (Σ τ_i) for comparison. Ten largest differences:", "",
             "| tensor | shape | ‖Δτ‖/‖τ‖ | WUDI rel. diff | WUDI max abs diff | TA rel. diff | TA max abs diff | cond(A) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows[:10]:
        cond = "not formed" if r["condition_A"] is None else f"{r['condition_A']:.2e}"
        lines.append(f"| {r['tensor']} | {r['shape'][0]}×{r['shape'][1]} | {r['task_vector_rounding']:.3f} | "
                     f"{r['wudi_relative_difference']:.3f} | {r['wudi_max_abs_difference']:.3g} | "
                     f"{r['task_arithmetic_relative_difference']:.3f} | {r['task_arithmetic_max_abs_difference']:.3g} | "
                     f"{cond} |")
    lines += ["", f"All {summary['matrices']} matrices: median ‖Δτ‖/‖τ‖ {summary['median_task_vector_rounding']:.3f}, "
              f"median WUDI relative difference {summary['median_wudi_relative_difference']:.3f}; largest entry "
              f"difference WUDI {summary['max_wudi_max_abs_difference']:.3g}, task arithmetic "
              f"{summary['max_task_arithmetic_max_abs_difference']:.3g}.", ""]
    print("\n".join(lines), flush=True)
    return summary


if __name__ == "__main__":
    main()
