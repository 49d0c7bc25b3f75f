"""The numerical core: pure torch, testable on plain tensors, one module per method.

* ``task_vectors``: kernels every method shares (working dtype, streaming Gram, chunked combine).
* ``awd``: Adaptive Weight Disentanglement (arXiv 2411.18729): the reduced δ solver and AWD Task
  Arithmetic; ``awd_direct`` the paper's full-size solver; ``awd_rows`` one δ per output row.
* ``tsv``: Task Singular Vectors merge (TSV-M, arXiv 2412.00081) and interference (STI).
* ``tsv_compress``: TSV-C, one task matrix as a rank-k LoRA update.
* ``wudi``: WUDI-Merging (arXiv 2503.08099), the reference's Adam and the exact minimiser.
* ``iso``: isotropic merging, Iso-C and Iso-CTS (arXiv 2502.04959).
* ``ace``: ACE-Merging (arXiv 2603.02945), adaptive covariance estimation in one n × n solve.
* ``selection``: which tensors a method treats (``select``).
* ``costs``: each per-matrix method's arithmetic, for the up-front time estimate.
* ``settings``: settings dataclasses, the single source of every default, choice and range.
"""

from mergekit_awd.core.ace import AceParameters, ace_merge_matrices
from mergekit_awd.core.awd import (
    AWDParameters,
    SolveResult,
    SolverSettings,
    merge_disentangled,
    solve_reduced,
)
from mergekit_awd.core.awd_direct import solve_direct
from mergekit_awd.core.awd_rows import row_grams, solve_rows
from mergekit_awd.core.iso import IsoCParameters, IsoCTSParameters, iso_c_matrices, iso_cts_matrices
from mergekit_awd.core.selection import Select, is_disentangled
from mergekit_awd.core.settings import setting, setting_fields
from mergekit_awd.core.task_vectors import (
    combine,
    gram_matrix,
    gram_of_task_vectors,
    mean_offdiag,
    pairwise_abs_cos,
    task_vector_stack,
    working_dtype,
)
from mergekit_awd.core.tsv import TSVParameters, TSVSettings, singular_task_interference, tsv_merge_matrices
from mergekit_awd.core.tsv_compress import CompressSettings, compression_rank, lora_factors
from mergekit_awd.core.wudi import WudiParameters, wudi_merge_matrices

__all__ = [
    # settings
    "SolverSettings", "AWDParameters", "TSVSettings", "TSVParameters", "CompressSettings", "WudiParameters",
    "IsoCParameters", "IsoCTSParameters", "AceParameters", "Select",
    "setting", "setting_fields",
    # kernels
    "working_dtype", "task_vector_stack", "gram_of_task_vectors", "gram_matrix", "pairwise_abs_cos",
    "mean_offdiag", "combine",
    # methods
    "solve_reduced", "solve_direct", "solve_rows", "row_grams", "SolveResult", "merge_disentangled", "tsv_merge_matrices",
    "singular_task_interference", "compression_rank", "lora_factors", "is_disentangled",
    "wudi_merge_matrices", "iso_c_matrices", "iso_cts_matrices", "ace_merge_matrices",
]
