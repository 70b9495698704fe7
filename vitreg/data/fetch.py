"""``vitreg data download|verify|where`` and the real run's fetch: get a dataset into the layout its loader reads.

Paper: Tables 1-3 (the datasets of notebooks 06, 08, 09) and Fig. 1-7 (their images). The manifest
(:mod:`vitreg.data.catalog`) says where each set comes from; :mod:`vitreg.data.download` fetches and checks the
files; :mod:`vitreg.data.arrange` unpacks them. The order of one download, so a failure never leaves a half
dataset where a loader would read it and never loses what was already fetched:

1. the datasets it needs first (``voc`` needs ``voc07``);
2. free disk checked (download + unpacked size), before any byte is fetched;
3. the licence or terms printed, the first time each dataset is downloaded here;
4. every file fetched into ``$VITREG_DATA/.downloads/<name>/`` (resumable, checked against its checksum);
5. unpacked into ``$VITREG_DATA/.staging/<name>/``, its counts checked there;
6. moved into place in one rename, with a record of its sources (:data:`PROVENANCE`); then the staging
   folder and the archives are removed.

A failure in 5 (a corrupt archive, a full disk, wrong counts) removes the staging folder and leaves the
archives and whatever was in place before untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vitreg.data.arrange import RECIPES, ArrangeError, check_counts
from vitreg.data.catalog import Entry, get_entry, load_manifest, size_text, state
from vitreg.data.download import DownloadError, check_hash, check_space, fetch
from vitreg.utils.io import atomic_write_text
from vitreg.utils.paths import data_root, is_offline

DOWNLOADS, STAGING, TERMS_SHOWN = ".downloads", ".staging", ".terms-shown"
#: Written into every arranged dataset folder: where its files came from and how they were checked.
PROVENANCE = ".vitreg-source.json"
#: The environment variable ``make reproduce DATA=none`` sets: ``none`` turns the real run's fetch off.
FETCH_ENV = "VITREG_FETCH"


class NeedsYou(RuntimeError):
    """A dataset without a stable public source: the message says what to fetch by hand and where to put it."""


class DataError(RuntimeError):
    """A download or arrangement failed (the message names the file and what to do)."""


def download(name: str, *, root: str | os.PathLike | None = None, manifest: dict[str, Entry] | None = None,
             force: bool = False, say: Callable[[str], Any] = print) -> Path:
    """Fetch, check, unpack and arrange one dataset (and the ones it needs) into the layout its loader reads.

    Args:
        name: a manifest name (``voc07``, ``ade20k``, ``cifar10`` ...).
        root: the datasets folder (default ``$VITREG_DATA``).
        manifest: the manifest (default ``data/datasets.yaml``).
        force: arrange again even when the folder is already here.
        say: where progress lines go.

    Returns:
        the folder the loader reads.

    Raises:
        NeedsYou: a set without a stable public source (what to fetch by hand).
        DataError: offline, a transfer, checksum or archive failed, or too little disk (nothing moved into place).
    """
    manifest = manifest if manifest is not None else load_manifest()
    entry = get_entry(name, manifest)
    base = data_root(root)
    if entry.get == "manual":
        raise NeedsYou(f"{entry.name} ({entry.title}) has no stable public source: {entry.how}. Put it at "
                       f"{entry.folder(base)} ({entry.layout}), then check it with `vitreg data verify {entry.name}`")
    if state(entry, base) == "present" and not force:
        say(f"{entry.name}: already here ({entry.folder(base)}); `vitreg data verify {entry.name}` checks it")
        return entry.folder(base)
    if is_offline():
        raise DataError(f"{entry.name}: this machine is offline (HF_HUB_OFFLINE/VITREG_OFFLINE); run `vitreg data "
                        f"download {entry.name}` on a connected machine and copy {entry.folder(base)} here")
    for need in entry.needs:
        download(need, root=base, manifest=manifest, say=say)
    try:
        check_space(base, (entry.download_mb + entry.disk_mb) * 1e6, entry.name)
    except DownloadError as err:
        raise DataError(str(err)) from err
    _show_terms(entry, base, say)
    if entry.get == "torchvision":
        return _download_torchvision(entry, base, say)
    files = _fetch_files(entry, base, say)
    return _install(entry, files, base, say)


def _show_terms(entry: Entry, base: Path, say: Callable[[str], Any]) -> None:
    """Print the licence or terms the first time ``entry`` is downloaded into ``base``."""
    record = base / TERMS_SHOWN
    shown = set(record.read_text().split()) if record.exists() else set()
    if entry.name in shown:
        return
    say(f"{entry.name}: {entry.title}. By downloading it you accept its licence or terms: {entry.licence}")
    atomic_write_text(record, "\n".join(sorted(shown | {entry.name})) + "\n")


def _fetch_files(entry: Entry, base: Path, say: Callable[[str], Any]) -> dict[str, Path]:
    """Every file of ``entry`` in ``.downloads/<name>/``, checked against its published checksum."""
    folder = base / DOWNLOADS / entry.name
    out = {}
    for f in entry.files:
        say(f"{entry.name}: fetching {f.name} from {f.urls[0]}"
            + (f" ({f.algorithm} from {f.checksum_from})" if f.algorithm else f" ({f.checksum_note})"))
        try:
            out[f.name] = fetch(f.urls, folder / f.name, algorithm=f.algorithm, digest=f.digest)
        except DownloadError as err:
            raise DataError(f"{entry.name}: {err}") from err
        except OSError as err:  # a full disk or quota: the bytes received stay, the next try resumes
            raise DataError(f"{entry.name}: {err} while saving {f.name}; what arrived stays in {folder}, so the "
                            "next try resumes: free some space (or set $VITREG_DATA) and run the command again") from err
    return out


def _install(entry: Entry, files: dict[str, Path], base: Path, say: Callable[[str], Any]) -> Path:
    """Arrange ``files`` in staging, check the counts there, then move the result into place in one rename."""
    staging = base / STAGING / entry.name
    shutil.rmtree(staging, ignore_errors=True)
    out = staging / "out" / entry.where
    target = entry.folder(base)
    try:
        say(f"{entry.name}: unpacking into {staging}")
        RECIPES[entry.arrange](entry, files, staging / "raw", out, base)
        if problems := check_counts(entry, out):
            raise DataError(f"{entry.name}: the unpacked files of {', '.join(files)} do not match the manifest "
                            f"({'; '.join(problems)}); nothing was moved into place. Delete "
                            f"{base / DOWNLOADS / entry.name} and download again")
        atomic_write_text(out / PROVENANCE, json.dumps(provenance(entry, files), indent=2) + "\n")
        _replace(out, target)
    except ArrangeError as err:
        raise DataError(f"{entry.name}: {err}; nothing was moved into place") from err
    except OSError as err:
        raise DataError(f"{entry.name}: {err} while unpacking; nothing was moved into place, the downloaded files "
                        f"stay in {base / DOWNLOADS / entry.name}: free some space and run the command again") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(base / STAGING)
    shutil.rmtree(base / DOWNLOADS / entry.name, ignore_errors=True)
    _remove_empty(base / DOWNLOADS)
    say(f"{entry.name}: ready in {target}")
    return target


def provenance(entry: Entry, files: dict[str, Path]) -> dict[str, Any]:
    """What :data:`PROVENANCE` records of an arranged dataset: its files (URL, checksum checked or the counts
    that stand in), the split recipe and the manifest's note (e.g. that the set is a proxy of the paper's).

    Returns:
        a JSON-ready dict; results can quote it.
    """
    return {"dataset": entry.name, "title": entry.title, "layout": entry.layout,
            "files": [{"name": f.name, "url": f.urls[0], "checked": f"{f.algorithm} {f.digest} ({f.checksum_from})"
                       if f.algorithm else f"file counts {entry.counts} ({f.checksum_note})"}
                      for f in entry.files if f.name in files],
            "split": entry.split, "note": entry.note}


def read_provenance(name: str, *, root: str | os.PathLike | None = None,
                    manifest: dict[str, Entry] | None = None) -> dict[str, Any] | None:
    """The :data:`PROVENANCE` record of a dataset arranged by ``vitreg data download``, or None (arranged by hand)."""
    entry = get_entry(name, manifest if manifest is not None else load_manifest())
    path = entry.folder(root) / PROVENANCE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _replace(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ``target`` is set aside first and restored if the move fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        if old.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _download_torchvision(entry: Entry, base: Path, say: Callable[[str], Any]) -> Path:
    """Both splits of a torchvision set through torchvision's own downloader (which checks its MD5s)."""
    from vitreg.data.datasets import try_load_dataset

    for split in ("train", "test"):
        ds, why = try_load_dataset(entry.name, split, root=base, download=True)
        if ds is None:
            raise DataError(f"{entry.name} ({split}): {why}")
        say(f"{entry.name}: {split} split, {len(ds)} images")
    return entry.folder(base)


def verify(name: str, *, root: str | os.PathLike | None = None, manifest: dict[str, Entry] | None = None) -> list[str]:
    """Check a dataset here against the manifest: file and class counts, and archives still in ``.downloads``.

    Returns:
        the problems found (empty: it matches). A torchvision set is checked by opening both splits.
    """
    manifest = manifest if manifest is not None else load_manifest()
    entry = get_entry(name, manifest)
    base = data_root(root)
    folder = entry.folder(base)
    if entry.get == "torchvision":
        from vitreg.data.datasets import try_load_dataset

        return [f"{split}: {why}" for split in ("train", "test")
                for _, why in [try_load_dataset(entry.name, split, root=base, download=False)] if why]
    if not folder.is_dir():
        return [f"{folder} does not exist ({'`vitreg data download ' + entry.name + '`' if entry.get == 'auto' else entry.how})"]
    problems = check_counts(entry, folder)
    for f in entry.files:
        kept = base / DOWNLOADS / entry.name / f.name
        if kept.exists() and f.algorithm:
            try:
                check_hash(kept, f.algorithm, f.digest)
            except DownloadError as err:
                problems.append(str(err))
    return problems


def where(name: str, *, root: str | os.PathLike | None = None, manifest: dict[str, Entry] | None = None) -> str:
    """One line: the folder the loader reads, its state here, and its layout."""
    entry = get_entry(name, manifest if manifest is not None else load_manifest())
    return f"{entry.folder(root)} ({state(entry, root)}; layout {entry.layout})"


# --- the real run ------------------------------------------------------------------------------------
#: Parameters of the notebooks that name datasets, and how to read them: the box sets of 08/10, the
#: classification sets of 05/06/10/11, and 09's dense sets (always ADE20k and NYUd, ImageNet for its probe).
_PARAM_SETS: dict[str, Callable[[Any], list[str]]] = {
    "datasets": lambda v: list(v) if isinstance(v, (list, tuple)) else [],
    "ttr_datasets": lambda v: list(v or []),
    "lost_datasets": lambda v: list(v or []),
    "dataset": lambda v: [v] if isinstance(v, str) else [],
    "probe_dataset": lambda v: [v] if isinstance(v, str) else [],
    "ade20k_root": lambda v: ["ade20k"] if v is None else [],
    "nyud_root": lambda v: ["nyud"] if v is None else [],
    "imagenet_root": lambda v: ["imagenet1k"] if v is None else [],
}


def datasets_for(params: dict[str, dict], manifest: dict[str, Entry] | None = None) -> dict[str, list[str]]:
    """The manifest datasets the planned notebooks read, with the notebooks that read each.

    Args:
        params: notebook -> its merged parameters (as the runner plans them).

    Returns:
        dataset name -> notebooks, in manifest order; names outside the manifest (``synthetic``, a folder) are left out.
    """
    manifest = manifest if manifest is not None else load_manifest()
    users: dict[str, list[str]] = {}
    for notebook, p in params.items():
        for key, read in _PARAM_SETS.items():
            if key in p:
                for ds in read(p[key]):
                    if str(ds).lower() in manifest:
                        users.setdefault(str(ds).lower(), []).append(notebook)
    return {n: users[n] for n in manifest if n in users}


def fetch_for_run(params: dict[str, dict], *, root: str | os.PathLike | None = None,
                  manifest: dict[str, Entry] | None = None, say: Callable[[str], Any] = print) -> list[str]:
    """Before a real run: fetch the freely downloadable sets its notebooks read that are not here yet.

    Prints what and how much first. ``VITREG_FETCH=none`` (``make reproduce DATA=none``) only lists them;
    offline it names the missing sets and the command. A set that fails or needs you is reported, never
    fatal: its notebook skips it with its own line. A notebook whose ``data_root`` parameter names a folder
    gets its sets there.

    Args:
        params: notebook -> its merged parameters (as the runner plans them).
        root: the datasets folder of notebooks without ``data_root`` (default ``$VITREG_DATA``).

    Returns:
        the names fetched.
    """
    manifest = manifest if manifest is not None else load_manifest()
    groups: dict[Any, dict[str, dict]] = {}
    for notebook, p in params.items():
        groups.setdefault(p.get("data_root") or root, {})[notebook] = p
    return [n for folder, group in groups.items() for n in _fetch_group(group, folder, manifest, say)]


def _fetch_group(params: dict[str, dict], root: Any, manifest: dict[str, Entry], say: Callable[[str], Any]) -> list[str]:
    """:func:`fetch_for_run` for notebooks that read one datasets folder."""
    needed = datasets_for(params, manifest)
    missing = [n for n in needed if state(manifest[n], root) != "present"]
    auto = [n for n in missing if manifest[n].get != "manual"]
    if by_hand := [n for n in missing if manifest[n].get == "manual"]:
        say("datasets to fetch by hand (their rows are skipped until then; `vitreg data download NAME` says how): "
            + ", ".join(f"{n} ({', '.join(needed[n])})" for n in by_hand))
    if not auto:
        return []
    total = sum(manifest[n].download_mb for n in auto)
    what = ", ".join(f"{n} {size_text(manifest[n].download_mb)}" for n in auto)
    command = f"vitreg data download {' '.join(auto)}"
    if os.environ.get(FETCH_ENV, "").strip().lower() in ("none", "0", "off", "no"):
        say(f"not fetching ({FETCH_ENV}=none / DATA=none): {what}; their rows are skipped. Later: `{command}`")
        return []
    if is_offline():
        say(f"offline: these datasets are missing and their rows will be skipped: {what}. On a connected machine: "
            f"`{command}`")
        return []
    say(f"fetching {len(auto)} datasets the notebooks read into {data_root(root)} ({size_text(total)} in all; "
        f"DATA=none skips this): {what}")
    done = []
    for n in auto:
        try:
            download(n, root=root, manifest=manifest, say=say)
            done.append(n)
        except (DataError, NeedsYou) as err:
            say(f"could not fetch {n} (its rows will be skipped): {err}")
    return done


def download_many(names: Iterable[str], **kwargs: Any) -> int:
    """``vitreg data download NAME...``: each in turn; returns the exit status (0 all here, 1 some failed)."""
    status = 0
    for name in names:
        try:
            download(name, **kwargs)
        except (DataError, NeedsYou) as err:
            print(err)
            status = 1
    return status
