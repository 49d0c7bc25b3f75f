"""The numerical core: pure torch, testable on plain tensors, one module per method.

A method's module holds its settings dataclass (the one home of its defaults, choices and ranges),
its math (docstrings give the paper's equations and where the reference implementation differs) and
its cost model (a ``*_work`` function, for the up-front time estimate).  AWD's δ has one entry,
``awd_delta`` (every scope × solver × optimiser), built from ``awd`` (the reduced solver and AWD Task
Arithmetic), ``awd_direct``, ``awd_rows`` and ``awd_descent`` (the one optimiser).  Shared by all:

* ``task_vectors``: kernels every method uses (working dtype, streaming Gram, chunked combine).
* ``selection``: which tensors a method treats (``select``).
* ``settings``: settings dataclasses, the single source of every default, choice and range.

The adapter registers each method (``mergekit_adapter.registration``); nothing here lists them.
"""

from mergekit_awd.core.awd import AWDParameters, SolverSettings
from mergekit_awd.core.awd_delta import Delta, TaskVectors, awd_task_arithmetic, disentangle, solve_delta
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
from mergekit_awd.core.tsv import TSVParameters, TSVSettings
from mergekit_awd.core.tsv_compress import CompressSettings

__all__ = [
    # settings
    "SolverSettings", "AWDParameters", "TSVSettings", "TSVParameters", "CompressSettings", "setting", "setting_fields",
    # kernels
    "working_dtype", "task_vector_stack", "gram_of_task_vectors", "gram_matrix", "pairwise_abs_cos",
    "mean_offdiag", "combine",
    # AWD's δ
    "TaskVectors", "Delta", "solve_delta", "awd_task_arithmetic", "disentangle",
]
