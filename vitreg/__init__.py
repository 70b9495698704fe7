"""vitreg: the reproducible companion to "Vision Transformers Need Registers" (Darcet et al., ICLR 2024).

Import the modules you need (``from vitreg.weights import load_model``); importing the package itself
loads nothing heavy and changes no global state.

Where things live, by layer (a module imports only from its own layer or the layers below it; the
import-linter contracts in ``pyproject.toml`` enforce this in ``make test``)::

    entry points   cli (the `vitreg` command), runner (papermill, the run order, the summary)
    presentation   notebook (what a notebook does besides science), report (+ report_render), scan_render, plots
                   (style, maps, charts), paper (+ paper_schema: data/paper_numbers.yaml and every verdict)
    measurements   F1 attention · F2/F3 norms · F4 similarity · F5 local_probes · F6 global_probes
                   (on estimators and features) · F7 registers · F8 lost, downstream, table2 (on heads) ·
                   beyond the paper: ttr, massive, positional · any ViT: scan
    data           data (datasets), dense_data (ADE20k, NYUd), boxes (VOC, COCO), planting (planted truth)
    core           models (the zoo), weights (+ weight_files: loading), resize (input size, position
                   embeddings), tokens (TokenLayout), capture (hooks), images, stream (the one batching
                   loop), extract, device
    utilities      paths, io (atomic writes), cache (features on disk), params, results, distributed
"""

__version__ = "0.1.0"
