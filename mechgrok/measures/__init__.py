"""Reading every task in its own algebra: groups, their real irreps, and measures on tables.

Pure mathematics (NumPy float64), below the models and the probes (MEASURES.md §7):

* :mod:`~mechgrok.measures.groups`: Z_n, Z_p* and S_n as multiplication tables over element
  indices, the discrete log of Z_p*, and :func:`group` to parse ``"C113"``, ``"Z97*"``, ``"S5"``.
* :mod:`~mechgrok.measures.young`: partitions, standard Young tableaux, Young's orthogonal form.
* :mod:`~mechgrok.measures.representations`: :class:`Irrep` and :func:`irreps` (Fourier for the
  cyclic groups, through the discrete log for Z_p*, one per partition for S_n), characters, the
  span of an irrep's entries (:func:`basis`) and projectors onto sums of spans.
* :mod:`~mechgrok.measures.metrics`: Chughtai et al.'s logit similarity (per rule ``xy``,
  ``xy^-1``, ``xyx^-1``, ``xyx``) and the fraction of variance in each irrep's span.
* :mod:`~mechgrok.measures.taskgroups`: a task read as a group: :func:`task_group` builds the
  group a task's algebra names (``Task.algebra``), :func:`group_tokens` and :func:`group_pairs`
  map its elements and pairs to the task's tokens and rows (Z_p*'s pairs leave 0 out).

Each module's docstring states its conventions (element order, composition order, names,
normalisation) and why.
"""

from __future__ import annotations

from mechgrok.measures.groups import (
    GROUP_KINDS,
    MAX_CYCLIC_ORDER,
    MAX_SYMMETRIC_DEGREE,
    Group,
    cyclic,
    discrete_log_table,
    group,
    multiplicative,
    power_table,
    primitive_root,
    symmetric,
)
from mechgrok.measures.metrics import (
    KEY_IRREP_THRESHOLD,
    RULES,
    answer_table,
    key_irreps,
    logit_similarities,
    logit_similarity,
    trace_template,
    variance_explained,
)
from mechgrok.measures.representations import (
    Irrep,
    basis,
    character_table,
    find_irrep,
    inner_product,
    irreps,
    projector,
    span_dimension,
)
from mechgrok.measures.taskgroups import (
    FourierView,
    fourier_view,
    group_pairs,
    group_tokens,
    task_group,
)
from mechgrok.measures.young import (
    adjacent_transposition_matrices,
    hook_length_dimension,
    partition_name,
    partitions,
    standard_tableaux,
)

__all__ = [
    "GROUP_KINDS",
    "KEY_IRREP_THRESHOLD",
    "MAX_CYCLIC_ORDER",
    "MAX_SYMMETRIC_DEGREE",
    "RULES",
    "FourierView",
    "Group",
    "Irrep",
    "adjacent_transposition_matrices",
    "answer_table",
    "basis",
    "character_table",
    "cyclic",
    "discrete_log_table",
    "find_irrep",
    "fourier_view",
    "group",
    "group_pairs",
    "group_tokens",
    "hook_length_dimension",
    "inner_product",
    "irreps",
    "key_irreps",
    "logit_similarities",
    "logit_similarity",
    "multiplicative",
    "partition_name",
    "partitions",
    "power_table",
    "primitive_root",
    "projector",
    "span_dimension",
    "standard_tableaux",
    "symmetric",
    "task_group",
    "trace_template",
    "variance_explained",
]
