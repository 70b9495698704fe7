"""One writer per output folder: an exclusive lock that a second ``vitreg run`` on the same ``--out`` meets.

Paper: none (every finding's outputs: two runs writing one folder would replace each other's results).

The lock is an ``fcntl`` lock on a small file in the folder that says who holds it (PID and start time).
The operating system releases it when the holder ends, however it ends (Ctrl-C, SIGKILL, a crash), so a
stale lock file never blocks a later run: only a live holder does.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: The lock file, relative to the output folder (``results/`` is ignored by git, like every output).
LOCK_FILE = Path("results") / ".vitreg-run.lock"


class FolderBusy(RuntimeError):
    """Another live process holds the output folder's lock."""


@contextmanager
def exclusive_folder(folder: str | os.PathLike, what: str = "vitreg run") -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` while the block runs; yields the lock file.

    Args:
        folder: the output folder (created if missing).
        what: the command named in the lock file and in the error.

    Raises:
        FolderBusy: another process holds it; the message names its PID and start time.
        OSError: the folder cannot be created or written (read-only, a file, no space).
    """
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "a process that has not said who it is"
            raise FolderBusy(f"{folder} is being written by another run ({holder}): wait for it to end, or pass "
                             "another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what}, PID {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with the next run)
