"""Progress bars that read well wherever a notebook runs.

Paper: none (the run's terminal and executed notebooks). Interactively (JupyterLab) a bar is
tqdm's widget; in a notebook the runner executes (``VITREG_TEXT_PROGRESS=1`` in the kernel's environment)
it is a text bar on stderr, which the runner forwards to the terminal and which an executed copy keeps in
its final state (a widget there is saved frozen at "0%").
"""

from __future__ import annotations

import os
from typing import Any

#: Set by :mod:`vitreg.cli.runner` for the kernels it starts: text bars instead of widgets.
TEXT_ENV = "VITREG_TEXT_PROGRESS"


def progress_bar(*args: Any, **kwargs: Any) -> Any:
    """``tqdm(*args, **kwargs)``: the text bar under the runner, else tqdm's automatic choice."""
    if os.environ.get(TEXT_ENV) == "1":
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(*args, **kwargs)
