"""One function per figure kind, one visual style (the only place in vitreg that draws).

Paper: the figures of every notebook. :mod:`vitreg.present.plots.style` holds the style, titles and saving;
:mod:`vitreg.present.plots.maps` the figures drawn over images or the patch grid; :mod:`vitreg.present.plots.charts`
the charts of numbers. Everything is importable from here (``plots.plot_norm_histograms``).
"""

from vitreg.present.plots.charts import (
    plot_artifact_scores, plot_norm_histograms, plot_block_norms, plot_size_trend,
    plot_similarity_densities, plot_downstream, plot_local_probes, plot_global_probes,
    plot_norm_distributions, plot_corloc, plot_bias_sweep, plot_massive_activations,
)
from vitreg.present.plots.card import figure_png, plot_scan_card
from vitreg.present.plots.maps import (
    plot_attention_grid, plot_head_maps, plot_norm_maps, plot_frequency_map, plot_mean_maps,
    plot_discoveries, plot_positional_artifact,
)
from vitreg.present.plots.gains import plot_register_gain
from vitreg.present.plots.neurons import plot_neuron_scores
from vitreg.present.plots.style import (PLANTED_LABEL, RANDOM_LABEL, is_random, label_line, maps_grid, save_figure,
                                 stamp, title_for, use_style)

__all__ = [
    "PLANTED_LABEL", "RANDOM_LABEL", "figure_png", "is_random", "label_line", "maps_grid", "plot_artifact_scores", "plot_attention_grid",
    "plot_bias_sweep", "plot_block_norms", "plot_corloc", "plot_discoveries", "plot_downstream",
    "plot_frequency_map", "plot_global_probes", "plot_head_maps", "plot_local_probes", "plot_massive_activations",
    "plot_mean_maps", "plot_neuron_scores", "plot_register_gain", "plot_norm_distributions", "plot_norm_histograms", "plot_norm_maps", "plot_positional_artifact",
    "plot_scan_card",
    "plot_similarity_densities", "plot_size_trend", "save_figure", "stamp", "title_for", "use_style",
]
