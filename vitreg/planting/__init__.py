"""Planted ground truth: what the analyses must find when the answer is known.

Random-weight models (smoke runs) have no artifacts of their own, and unit tests need a known answer.
Everything that plants one lives in this package (``outliers``: high-norm tokens, attention, objects;
``probes``: the probes' and dense heads' planted relations; ``followups``: register neurons, massive
activations, positional signals), importable from here, under two kinds of names:

- tensor ops, plain verbs on tensors that return new tensors (``scale_tokens``, ``random_outlier_mask``,
  ``attention_peak``, ``planted_feature_maps``);
- hooks, context managers named ``planted*`` that install on ``with`` and are removed on exit, also on
  exceptions, and work for any batch size (``planted_outliers``, ``planted``, ``planted_registers``); they write
  through the hook namespace (:mod:`vitreg.core.hooks`), and the ones the feature cache must know of enter
  themselves as the model's experiment context (:mod:`vitreg.core.context`).

No measurement imports this package: planted truth is supplied from outside (the notebooks and the experiments'
steps wrap ordinary calls), and the synthetic LOST features live with the data (:mod:`vitreg.data.planted_objects`).

No science function takes a ``plant_*`` parameter: a notebook wraps an ordinary call, e.g.
``with planting.planted(loaded, mask): rec = extract(loaded, images, norms=[-1])``.
"""

from vitreg.planting.outliers import (
    scale_tokens, random_outlier_mask, mask_to_tokens, attention_peak, planted_outliers,
    planted_outliers_per_image, planted, planted_emergence_block, planted_registers,
)
from vitreg.data.planted_objects import planted_feature_maps, planted_objects
from vitreg.planting.probes import (
    plant_mask, PlantedOutliers, planted_outlier_share, at_image, planted_mask,
    planted_segmentation, planted_depth,
)
from vitreg.planting.followups import (
    planted_register_neurons, planted_massive, planted_grid_signal,
)

__all__ = [
    "PlantedOutliers", "at_image", "attention_peak", "mask_to_tokens", "plant_mask", "planted",
    "planted_depth", "planted_emergence_block", "planted_feature_maps", "planted_grid_signal",
    "planted_mask", "planted_massive", "planted_objects", "planted_outlier_share",
    "planted_outliers", "planted_outliers_per_image", "planted_register_neurons",
    "planted_registers", "planted_segmentation", "random_outlier_mask", "scale_tokens",
]
