"""Atomic writes: a crash or Ctrl-C never leaves a half-written cache, result or figure behind.

Every file vitreg writes goes to a temporary file in the same folder and is then renamed over the
target (``os.replace`` is atomic on POSIX and Windows). The file ends up with the permissions a plain
``open(path, "w")`` would give: those of the file it replaces, else ``0o666`` less the umask (so a shared
cache or course folder stays readable by the group when the umask says so).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _open_mode(path))  # mkstemp makes 0600 whatever the umask
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_with(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move a finished temporary file ``tmp`` (written in ``path``'s folder by another library, e.g. papermill's
    executed notebook) over ``path`` atomically, with the permissions ``open(path, "w")`` would give."""
    os.chmod(tmp, _open_mode(Path(path)))
    os.replace(tmp, path)
    return Path(path)


def _open_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: the existing file's, else 0o666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically (NaN is refused: results must be valid JSON)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False, default=jsonable) + "\n")


def atomic_write_with(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary binary file that then replaces ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically."""
    import torch

    return atomic_write_with(path, lambda f: torch.save(obj, f))


class UnreadableNotebook(ValueError):
    """A notebook file that is not a notebook (truncated, empty, not JSON, no list of cells)."""


def read_notebook(path: str | os.PathLike) -> dict:
    """The notebook (``.ipynb``) at ``path`` as a JSON dict, for the book and the handout.

    Raises:
        UnreadableNotebook: not UTF-8 JSON with a list of cells; the message names the file and the fix.
    """
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise UnreadableNotebook(f"{path} is not a readable notebook ({err}): restore it (git checkout -- {path}) "
                                 "or run it again") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise UnreadableNotebook(f"{path} is not a notebook (no list of cells): restore it (git checkout -- {path})")
    return nb


def jsonable(x: Any) -> Any:
    """JSON fallback for numpy/torch scalars and arrays, and paths (values only: dictionary keys must
    already be str, int, float, bool or None; a tuple key raises ``TypeError``)."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")
