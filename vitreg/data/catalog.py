"""The dataset manifest (``data/datasets.yaml``): what each notebook reads, where it comes from, and its state here.

Paper: Tables 1-3 and Fig. 1-7 (every dataset the notebooks read). Used by ``vitreg data`` (list, download,
verify, where), by the real run's fetch of the freely downloadable sets (:mod:`vitreg.data.fetch`), and by
the README's data table (:func:`render_table`), so the three never disagree.

A dataset's *state* here is one of:

* ``present``: the folder the loaders read exists (``vitreg data verify`` checks it fully);
* ``downloadable``: ``vitreg data download NAME`` can fetch it (from its source, or through torchvision);
* ``needs you``: no stable public source; ``vitreg data download NAME`` says what to fetch by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vitreg.utils.paths import data_root, repo_root

Get = Literal["auto", "torchvision", "manual"]
State = Literal["present", "downloadable", "needs you"]
GETS = ("auto", "torchvision", "manual")
#: The arrange recipes of :mod:`vitreg.data.arrange` a manifest may name.
RECIPES = ("voc", "voc_classification", "coco20k", "ade20k", "nyud", "caltech101", "sun397", "cub")
#: Hash algorithms a manifest file entry may carry.
HASHES = ("sha256", "md5")


class ManifestError(ValueError):
    """The manifest is malformed (the message names the dataset and the field)."""


class UnknownDataset(KeyError):
    """A name that is not in the manifest (the message lists the known names)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class SourceFile:
    """One file fetched for a dataset.

    Attributes:
        name: the file name it is saved under.
        urls: where to fetch it, tried in order.
        algorithm: ``"sha256"``, ``"md5"`` or ``""`` when the source publishes no checksum.
        digest: the published checksum (lower-case hex), or ``""``.
        checksum_from: where the checksum is recorded (the source's page, torchvision's dataset code).
        checksum_note: what stands in for a missing checksum (e.g. published file counts).
    """

    name: str
    urls: tuple[str, ...]
    algorithm: str = ""
    digest: str = ""
    checksum_from: str = ""
    checksum_note: str = ""


@dataclass(frozen=True)
class Entry:
    """One dataset of the manifest (see the header of ``data/datasets.yaml`` for each field)."""

    name: str
    title: str
    used_by: tuple[str, ...]
    get: Get
    download_mb: float
    disk_mb: float
    licence: str
    where: str
    layout: str
    files: tuple[SourceFile, ...] = ()
    arrange: str = ""
    needs: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    how: str = ""
    note: str = ""

    def folder(self, root: str | os.PathLike | None = None) -> Path:
        """The folder the loaders read (under ``$VITREG_DATA`` or ``root``)."""
        return data_root(root) / self.where

    def source(self) -> str:
        """Where it comes from, in one short phrase."""
        if self.get == "torchvision":
            return "torchvision downloader"
        if self.get == "manual":
            return "by hand (registration or no stable source)"
        hosts = sorted({u.split("/")[2] for f in self.files for u in f.urls[:1]})
        return ", ".join(hosts)


def manifest_path() -> Path:
    """The repository's manifest, ``data/datasets.yaml``."""
    return repo_root() / "data" / "datasets.yaml"


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, Entry]:
    """Read and check the manifest.

    Args:
        path: a manifest file (default :func:`manifest_path`).

    Returns:
        name -> :class:`Entry`, in the file's order.

    Raises:
        ManifestError: a dataset lacks a field or names an unknown recipe, hash or dependency.
    """
    import yaml

    path = Path(path) if path is not None else manifest_path()
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict) or not raw:
        raise ManifestError(f"{path} holds no datasets; it must map dataset names to their entries")
    entries = {name: _entry(name, spec, path) for name, spec in raw.items()}
    for e in entries.values():
        if unknown := [n for n in e.needs if n not in entries]:
            raise ManifestError(f"{path}: {e.name} needs unknown datasets {unknown}")
    return entries


def _entry(name: str, spec: Any, path: Path) -> Entry:
    """One manifest entry, checked."""
    if not isinstance(spec, dict):
        raise ManifestError(f"{path}: {name} must be a mapping of fields")
    required = ("title", "used_by", "get", "download_mb", "disk_mb", "licence", "where", "layout")
    if missing := [k for k in required if k not in spec]:
        raise ManifestError(f"{path}: {name} lacks {', '.join(missing)}")
    if spec["get"] not in GETS:
        raise ManifestError(f"{path}: {name}.get is {spec['get']!r}; use one of {', '.join(GETS)}")
    files = tuple(_source_file(name, f, path) for f in spec.get("files") or ())
    if spec["get"] == "auto" and (not files or spec.get("arrange") not in RECIPES):
        raise ManifestError(f"{path}: {name} is get: auto, so it needs files and an arrange recipe "
                            f"({', '.join(RECIPES)})")
    if spec["get"] == "manual" and not spec.get("how"):
        raise ManifestError(f"{path}: {name} is get: manual, so it needs `how` (what to fetch by hand)")
    return Entry(name=name, title=str(spec["title"]), used_by=tuple(spec["used_by"]), get=spec["get"],
                 download_mb=float(spec["download_mb"]), disk_mb=float(spec["disk_mb"]),
                 licence=str(spec["licence"]), where=str(spec["where"]), layout=str(spec["layout"]), files=files,
                 arrange=str(spec.get("arrange", "")), needs=tuple(spec.get("needs") or ()),
                 counts={str(k): int(v) for k, v in (spec.get("counts") or {}).items()},
                 classes={str(k): int(v) for k, v in (spec.get("classes") or {}).items()},
                 split=dict(spec.get("split") or {}), how=str(spec.get("how", "")), note=str(spec.get("note", "")))


def _source_file(name: str, f: Any, path: Path) -> SourceFile:
    """One ``files`` item, checked: a name, URLs, and a published checksum or a note saying there is none."""
    if not isinstance(f, dict) or not f.get("name") or not f.get("urls"):
        raise ManifestError(f"{path}: every file of {name} needs a name and urls")
    algos = [a for a in HASHES if a in f]
    if len(algos) > 1:
        raise ManifestError(f"{path}: {name}/{f['name']} has several checksums; keep the published one")
    if not algos and not f.get("checksum"):
        raise ManifestError(f"{path}: {name}/{f['name']} has no checksum: record the published one (md5/sha256 "
                            "with checksum_from) or say `checksum: none published (...)`")
    if algos and not f.get("checksum_from"):
        raise ManifestError(f"{path}: {name}/{f['name']} has a checksum without checksum_from (who published it)")
    algo = algos[0] if algos else ""
    return SourceFile(name=str(f["name"]), urls=tuple(f["urls"]), algorithm=algo,
                      digest=str(f.get(algo, "")).lower(), checksum_from=str(f.get("checksum_from", "")),
                      checksum_note=str(f.get("checksum", "")))


def get_entry(name: str, manifest: dict[str, Entry] | None = None) -> Entry:
    """The entry of ``name`` (case-insensitive: ``VOC07`` is ``voc07``).

    Raises:
        UnknownDataset: the name is not in the manifest (the message lists the known names).
    """
    manifest = manifest if manifest is not None else load_manifest()
    key = name.lower()
    if key not in manifest:
        raise UnknownDataset(f"unknown dataset {name!r}; known: {', '.join(manifest)}")
    return manifest[key]


def is_present(entry: Entry, root: str | os.PathLike | None = None) -> bool:
    """Whether the folder the loaders read is here (a cheap look: ``verify`` counts the files)."""
    folder = entry.folder(root)
    if not folder.is_dir():
        return False
    return all((folder / sub).exists() for sub in {**entry.counts, **entry.classes}) if entry.get != "torchvision" \
        else any(folder.iterdir())


def state(entry: Entry, root: str | os.PathLike | None = None) -> State:
    """``present``, ``downloadable`` or ``needs you`` (see the module docstring)."""
    if is_present(entry, root):
        return "present"
    return "needs you" if entry.get == "manual" else "downloadable"


def size_text(mb: float) -> str:
    """``~460 MB`` or ``~37 GB``."""
    return f"~{mb / 1000:.3g} GB" if mb >= 1000 else f"~{mb:.0f} MB"


def list_lines(manifest: dict[str, Entry] | None = None, root: str | os.PathLike | None = None) -> list[str]:
    """What ``vitreg data list`` prints: every dataset with its users, size, source, licence and state here."""
    manifest = manifest if manifest is not None else load_manifest()
    lines = [f"datasets folder: {data_root(root)} (set $VITREG_DATA to move it)"]
    for e in manifest.values():
        lines.append(f"{e.name:<11} {state(e, root):<12} {size_text(e.download_mb):>9}  {e.title}")
        lines.append(f"{'':<11} used by: {'; '.join(e.used_by)}")
        lines.append(f"{'':<11} source: {e.source()}; licence: {e.licence}")
    return lines


def render_table(manifest: dict[str, Entry] | None = None) -> str:
    """The README's data table (markdown), made from the manifest: one row per dataset, then each note.

    A test checks that the README holds exactly this text.
    """
    manifest = manifest if manifest is not None else load_manifest()
    how = {"auto": "`vitreg data download {}`", "torchvision": "`vitreg data download {}` (torchvision)",
           "manual": "by hand, then `vitreg data verify {}`"}
    rows = ["| dataset | used by | download | get it | licence / terms | layout (under `$VITREG_DATA`) |",
            "|---|---|---|---|---|---|"]
    for e in manifest.values():
        checks = "; ".join(dict.fromkeys(f"{f.algorithm.upper()} from {f.checksum_from}" if f.algorithm
                                         else "file counts, no published checksum" for f in e.files))
        get = how[e.get].format(e.name) + (f" (checked: {checks})" if checks else "")
        cells = [f"`{e.name}`: {e.title}", "; ".join(e.used_by), size_text(e.download_mb), get,
                 _link(e.licence), f"`{e.layout.split(' (')[0]}`"]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    notes = [f"- `{e.name}`: {e.note}" for e in manifest.values() if e.note]
    return "\n".join(rows + ([""] + notes if notes else []))


def _link(licence: str) -> str:
    """``<url> (terms)`` as a markdown link followed by the words."""
    url, _, rest = licence.partition(" ")
    return f"[{url.split('/')[2]}]({url}) {rest}".strip() if url.startswith("http") else licence
