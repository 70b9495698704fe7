"""What the terminal shows while ``vitreg run`` executes a notebook: its run-time estimates and its progress,
not minutes of silence, and no Jupyter noise.

Paper: none (a quiet, informative terminal; the run-time estimate before the heavy part).

papermill hands every stream output of the kernel to :class:`Forward` (its ``stdout_file`` and ``stderr_file``)
as it arrives. :class:`Forward` keeps what a person waiting for the run wants: the estimate line of
:func:`vitreg.core.stream.describe_estimate` ("... will take about ..."), each progress bar at every tenth of the
way (tqdm redraws it with carriage returns hundreds of times), planted-truth failures and errors; every
other output stays in the executed notebook only. :data:`NOISE` names the Jupyter/ZMQ messages dropped
from the runner's own process (:func:`quiet_jupyter`).
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

#: Messages of the Jupyter machinery that say nothing to a user of the run (regular expressions).
NOISE = (
    r".*Jupyter is migrating its paths.*",
    r".*[Pp]roactor event loop.*",
    r".*zmq.*",
    r".*ZMQ.*",
    r".*Debugger warning.*",
    r".*frozen modules.*",
    r".*Message signing is disabled.*",
)

_BAR = re.compile(r"^(?P<desc>.*?):?\s*(?P<pct>\d{1,3})%\|")
_KEEP = ("will take about", "PLANTED", "Traceback", "Error", "FAIL")


class Forward:
    """A file-like sink for one notebook's stream outputs that writes the lines worth showing to ``out``.

    Args:
        out: where to write (default ``sys.stdout`` at write time).
        indent: prefix of every forwarded line.
        step: forward a progress bar each time it passes another ``step`` percent (and at 100%).
    """

    def __init__(self, out: TextIO | None = None, *, indent: str = "    ", step: int = 10) -> None:
        self.out, self.indent, self.step = out, indent, step
        self._pending = ""
        self._shown: dict[str, int] = {}

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = re.split(r"[\r\n]", self._pending)
        for line in lines:
            self._line(line)
        if _BAR.match(self._pending):  # a bar redrawn in place: its latest state is complete already
            self._line(self._pending)
            self._pending = ""
        return len(text)

    def flush(self) -> None:
        (self.out or sys.stdout).flush()

    def _line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        bar = _BAR.match(line)
        if bar:
            desc, pct = bar["desc"].strip(), int(bar["pct"])
            last = self._shown.get(desc, -self.step)
            if pct == 100 and last == 100 or pct < 100 and pct // self.step <= last // self.step:
                return
            self._shown[desc] = pct
            line = re.sub(r"\|[^|]*\|", "|", line, count=1)  # drop the drawn bar, keep counts, rate and times
        elif not any(k in line for k in _KEEP) or any(re.fullmatch(n, line) for n in NOISE):
            return
        (self.out or sys.stdout).write(f"{self.indent}{line}\n")


@contextmanager
def quiet_jupyter() -> Iterator[None]:
    """While notebooks run: drop the :data:`NOISE` warnings and log records of the Jupyter machinery in this
    process (papermill's own INFO logging, e.g. "Executing notebook with kernel", stays off as before)."""
    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not any(re.fullmatch(n, record.getMessage(), re.S) for n in NOISE)

    drop = _Drop()
    loggers = [logging.getLogger(n) for n in ("papermill", "traitlets", "jupyter_client", "nbclient", "asyncio")]
    for lg in loggers:
        lg.addFilter(drop)
    with warnings.catch_warnings():
        for pattern in NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for lg in loggers:
                lg.removeFilter(drop)
