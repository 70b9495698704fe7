"""vitreg: the reproducible companion to "Vision Transformers Need Registers" (Darcet et al., ICLR 2024).

Import the modules you need, one level down (``from vitreg.core.weights import load_model``,
``from vitreg.measure import norms``); importing the package itself loads nothing heavy and changes no
global state.

The folders are the layers, from the top down; a module imports only from its own layer or the layers
below it (the import-linter contracts in ``pyproject.toml`` enforce this in ``make test``)::

    cli          the `vitreg` command (main), the notebook runner, `vitreg extract` (prefill), book, handout
    present      notebook (what a notebook does besides science), report (+ report_render), scan_render,
                 plots (style, maps, charts, diagrams): the only code that draws
    claims       paper (data/paper_numbers.yaml and every verdict, + paper_schema)
    experiments  one definition per notebook (parameters, models, work, steps, results record), the
                 parameter profiles (params) and the run-time table (timing)
    measure      F1 attention · F2/F3 norms · F4 similarity · F5 local_probes · F6 global_probes (on
                 estimators and features) · F7 registers · F8 lost, downstream (on heads) · beyond the
                 paper: ttr, massive, positional · any ViT: scan
    planting     planted ground truth for tests and smoke runs, supplied from outside (beside measure: neither
                 imports the other)
    data         datasets, dense (ADE20k, NYUd), boxes (VOC, COCO), planted_objects (LOST's synthetic features)
    core         models (the zoo), weights (+ weight_files), resize, tokens (TokenLayout), hooks (the named
                 points every reader and writer goes through), capture, context (planted truth in force),
                 images, stream (the one batching loop), extract, device
    utils        paths, io (atomic writes), cache (features on disk), results, distributed, progress
"""

__version__ = "0.1.0"
