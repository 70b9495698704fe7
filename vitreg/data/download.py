"""File transfers a user can trust: resumable over HTTP range requests, checked against a published checksum.

Paper: none (how the datasets of Tables 1-3 reach the disk). Used by :mod:`vitreg.data.fetch`.

A file is fetched into ``<name>.part`` beside its destination; an interrupted transfer resumes from the
bytes already there (``Range: bytes=N-``; a server that ignores ranges sends the whole file again). Only a
complete file whose checksum matches the published one is renamed to its final name; a mismatch deletes the
part file and raises :class:`ChecksumMismatch`, which names the file, the expected and the actual hash.
Standard library only (urllib, hashlib): the transfers need nothing more.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from vitreg.utils.progress import progress_bar

CHUNK = 1 << 20
USER_AGENT = "vitreg-data/0.1"


class DownloadError(RuntimeError):
    """A transfer failed (the message names the file, the URLs tried and what to do)."""


class ChecksumMismatch(DownloadError):
    """A downloaded file is not the published one.

    Attributes:
        file: the file checked.
        algorithm: ``md5`` or ``sha256``.
        expected: the published hash.
        actual: the hash of the file received.
    """

    def __init__(self, file: Path, algorithm: str, expected: str, actual: str) -> None:
        super().__init__(f"{file.name}: {algorithm} is {actual}, expected {expected} (published); the file was "
                         f"deleted, run the command again to fetch it afresh")
        self.file, self.algorithm, self.expected, self.actual = file, algorithm, expected, actual


class NotEnoughSpace(DownloadError):
    """Too little free disk for a download and its unpacking (nothing was fetched)."""


def file_hash(path: str | os.PathLike, algorithm: str) -> str:
    """The hex digest of a file (``md5`` or ``sha256``), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_hash(path: Path, algorithm: str, expected: str) -> None:
    """Raise :class:`ChecksumMismatch` (and delete ``path``) unless its hash is ``expected``; no-op without one."""
    if not algorithm:
        return
    actual = file_hash(path, algorithm)
    if actual != expected.lower():
        path.unlink(missing_ok=True)
        raise ChecksumMismatch(path, algorithm, expected.lower(), actual)


def check_space(folder: str | os.PathLike, needed_bytes: float, what: str) -> None:
    """Raise :class:`NotEnoughSpace` unless ``folder``'s disk has ``needed_bytes`` free.

    Args:
        folder: where the data goes (its nearest existing parent is measured).
        needed_bytes: the download plus its unpacked size.
        what: the datasets, for the message.
    """
    probe = Path(folder)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise NotEnoughSpace(f"{what} needs about {needed_bytes / 1e9:.1f} GB free at {probe}, but only "
                             f"{free / 1e9:.1f} GB are: free some space or set $VITREG_DATA to a larger disk")


def fetch(urls: tuple[str, ...] | list[str], dest: str | os.PathLike, *, algorithm: str = "", digest: str = "",
          timeout: float = 60.0) -> Path:
    """Download ``dest`` from the first URL that answers, resuming a ``.part`` file, and check its hash.

    Args:
        urls: where the file is served, tried in order.
        dest: the final path; ``dest.part`` holds the bytes while they arrive.
        algorithm: ``md5``/``sha256`` of a published checksum, or ``""`` when none is published.
        digest: that checksum.
        timeout: seconds without data before a connection counts as failed.

    Returns:
        ``dest``, complete (and matching ``digest`` when one is given).

    Raises:
        ChecksumMismatch: the file is not the published one (it is deleted).
        DownloadError: no URL delivered it (the part file stays, so the next call resumes).
        OSError: the disk is full or not writable (the part file stays).
    """
    dest = Path(dest)
    if dest.exists():
        check_hash(dest, algorithm, digest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        try:
            _transfer(url, part, timeout)
            break
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as err:
            errors.append(f"{url}: {getattr(err, 'reason', err)}")
    else:
        kept = f"; {part.stat().st_size / 1e6:.1f} MB kept in {part}, the next try resumes" if part.exists() else ""
        raise DownloadError(f"{dest.name} could not be downloaded ({'; '.join(errors)}){kept}. Check the "
                            f"connection and run the command again")
    check_hash(part, algorithm, digest)
    os.replace(part, dest)
    return dest


def _transfer(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (a range request from its size), with a progress bar."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={have}-"} if have else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part file is already whole
            return
        raise
    with response:
        if have and response.status != 206:  # the server ignored the range: start again
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        with open(part, mode) as out, progress_bar(total=total, initial=have, unit="B", unit_scale=True,
                                                   unit_divisor=1024, desc=part.name[:-5]) as bar:
            got = have
            while block := response.read(CHUNK):
                out.write(block)
                got += len(block)
                bar.update(len(block))
        if total is not None and got < total:
            raise ConnectionError(f"connection closed after {got} of {total} bytes")


def is_disk_full(err: BaseException) -> bool:
    """Whether an error is the disk running out of space (or quota)."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
