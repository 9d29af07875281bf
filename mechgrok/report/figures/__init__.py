"""The report's figures, each a public function returning a plotly ``Figure``.

Every function takes a run (a :class:`~mechgrok.report.data.RunData`, a
:class:`~mechgrok.store.Run`, or a path) and returns a ``plotly.graph_objects.Figure``; in a
notebook, ``figures.loss_curves("checkpoints/quick")`` shows it. A figure whose data does not
exist yet (the run was not analysed, the measure does not apply to the task) raises
:class:`NoData` saying why and what would produce it.

Only SVG trace types are used (``scatter``, ``bar``, ``heatmap``): no WebGL, so the report renders
in any browser, headless ones included.

plotly renders a subset of HTML in titles, legends, labels and hover text, so every text from a
file or a user (run ids, probe and value names, a verdict) goes through :func:`text` first.

Where they live: :mod:`.curves` (training curves, progress measures, any probe's scalars),
:mod:`.fourier` (Fourier pictures and neurons), :mod:`.irreps` (a group task in its
irreducible representations), :mod:`.spectrum` (the 2-D spectrum of a task with no group),
:mod:`.circles` (the embedding in each key frequency's plane), :mod:`.geometry` (attention, the embedding's
circles, clock or pizza), :mod:`.stability` (softmax collapse), :mod:`.compare` (several runs).
Each run-report figure registers itself in :mod:`.registry` (:data:`RUN_FIGURES`), which gives
the report its list and order and :data:`DRAWN_PROBES`.
"""

from mechgrok.report.figures.base import (
    HEIGHT,
    PHASE_COLOURS,
    TEMPLATE,
    TEST,
    TRAIN,
    NoData,
    new_figure,
    run_data,
    shade_phases,
    text,
)
from mechgrok.report.figures.circles import embedding_circles
from mechgrok.report.figures.compare import COMPARE_METRICS, compare_curves, compare_series
from mechgrok.report.figures.curves import (
    accuracy_curves,
    gini_curves,
    loss_curves,
    other_probes,
    probe_scalars,
    restricted_loss,
    weight_norm,
)
from mechgrok.report.figures.fourier import (
    fourier_final,
    fourier_heatmap,
    neuron_clusters,
    neuron_logit_map,
)
from mechgrok.report.figures.geometry import (
    attention_patterns,
    clock_pizza_measures,
    logit_sd_table,
    pc_pairs,
    pca_circle,
)
from mechgrok.report.figures.irreps import irrep_losses, irrep_similarity, irrep_variance
from mechgrok.report.figures.registry import (
    FOURIER_ALGEBRAS,
    IRREP_ALGEBRAS,
    RUN_FIGURES,
    SECTIONS,
    FigureSpec,
    drawn_probes,
    figure,
)
from mechgrok.report.figures.spectrum import spectrum2d_final, spectrum2d_losses
from mechgrok.report.figures.stability import collapse_curves, nlm_alignment

#: Probes whose values have their own figures (every built-in figure registered above); every
#: other probe's scalars get a generic one (:func:`probe_scalars`).
DRAWN_PROBES = drawn_probes()

__all__ = [
    "COMPARE_METRICS",
    "DRAWN_PROBES",
    "FOURIER_ALGEBRAS",
    "HEIGHT",
    "IRREP_ALGEBRAS",
    "PHASE_COLOURS",
    "RUN_FIGURES",
    "SECTIONS",
    "TEMPLATE",
    "TEST",
    "TRAIN",
    "FigureSpec",
    "NoData",
    "accuracy_curves",
    "attention_patterns",
    "clock_pizza_measures",
    "collapse_curves",
    "compare_curves",
    "compare_series",
    "drawn_probes",
    "embedding_circles",
    "figure",
    "fourier_final",
    "fourier_heatmap",
    "gini_curves",
    "irrep_losses",
    "irrep_similarity",
    "irrep_variance",
    "logit_sd_table",
    "loss_curves",
    "neuron_clusters",
    "neuron_logit_map",
    "new_figure",
    "nlm_alignment",
    "other_probes",
    "pc_pairs",
    "pca_circle",
    "probe_scalars",
    "restricted_loss",
    "run_data",
    "shade_phases",
    "spectrum2d_final",
    "spectrum2d_losses",
    "text",
    "weight_norm",
]
