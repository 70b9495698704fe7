"""The notebook kernel of ``vitreg run`` without its noise on Ctrl-C: one line and exit 130, not twenty lines of ZMQ.

Paper: none (the runner of every notebook).

When a run is interrupted, the runner shuts the kernel down while it is still answering; the kernel then logs
``ZMQError: Socket operation on non-socket`` with its traceback to its own stderr, and nbclient and asyncio log
"Kernel died" and "Task exception was never retrieved" in the runner's process. None of it says anything to
the person who pressed Ctrl-C. :class:`QuietKernelManager` sends the kernel's own stderr (never the notebook's
output, which goes through Jupyter messages) to a log file, which the runner shows when the notebook fails
and drops otherwise; :func:`quiet_after_interrupt` drops the runner's machinery log records once an
interrupt is under way.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from jupyter_client.manager import AsyncKernelManager

#: Loggers of the Jupyter machinery that speak while an interrupted kernel is shut down.
MACHINERY = ("papermill", "nbclient", "asyncio", "traitlets", "jupyter_client")


class QuietKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel writes its own stderr (its log, not the notebook's output) to
    :attr:`kernel_log` (see :func:`kernel_manager_logging_to`)."""

    kernel_log: Any = None

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        if self.kernel_log is not None:
            kw["stderr"] = self.kernel_log
        await super()._async_launch_kernel(kernel_cmd, **kw)


def kernel_manager_logging_to(log: IO[bytes]) -> type[QuietKernelManager]:
    """A :class:`QuietKernelManager` class whose kernels write their stderr to the open file ``log``
    (papermill's ``kernel_manager_class``)."""
    return type("QuietKernelManagerForOneRun", (QuietKernelManager,), {"kernel_log": log})


def log_tail(log: IO[bytes], lines: int = 20) -> str:
    """The last ``lines`` lines the kernel wrote to ``log`` (for a notebook that failed)."""
    log.flush()
    log.seek(0)
    return "\n".join(log.read().decode("utf-8", "replace").strip().splitlines()[-lines:])


class _Interrupt:
    """Whether the run being executed has been interrupted (set by :func:`quiet_after_interrupt`'s caller)."""

    happened = False


def mark_interrupted() -> None:
    """Say that an interrupt is under way: the machinery's log records are dropped from now on."""
    _Interrupt.happened = True


@contextmanager
def quiet_after_interrupt() -> Iterator[None]:
    """While the block runs, drop the log records of :data:`MACHINERY` once :func:`mark_interrupted` was called
    (kernel shutdown, "Kernel died", never-retrieved tasks); before that, every record passes."""
    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not _Interrupt.happened

    drop = _Drop()
    loggers = [logging.getLogger(name) for name in MACHINERY]
    _Interrupt.happened = False
    for lg in loggers:
        lg.addFilter(drop)
    try:
        yield
    finally:
        if _Interrupt.happened:
            gc.collect()  # the shut-down kernel's tasks log "never retrieved" when collected: collect them here
        for lg in loggers:
            lg.removeFilter(drop)
        _Interrupt.happened = False
