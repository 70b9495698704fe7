"""The course's syllabus page (``notebooks/syllabus.yaml``): objectives, prerequisites, minutes per notebook,
the dependency map and a 90-minute path, as a page of the book.

Paper: all findings F1-F9 (the notebooks that teach them, in the order a course takes them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from vitreg.experiments.params import load_order
from vitreg.utils.paths import repo_root

PATH_MINUTES = 90


class SyllabusError(ValueError):
    """``notebooks/syllabus.yaml`` disagrees with the run order or with itself."""


def load_syllabus(root: Path | None = None) -> dict[str, Any]:
    """``notebooks/syllabus.yaml``, checked against ``notebooks/order.yaml``.

    Raises:
        SyllabusError: a notebook of the run order missing (or one not in it), ``builds_on`` naming a
            notebook that is unknown or not earlier in the run order, or a 90-minute path that takes longer,
            skips what it builds on, or names an unknown notebook.
    """
    root = root or repo_root()
    data = yaml.safe_load((root / "notebooks" / "syllabus.yaml").read_text())
    order = [e["notebook"] for e in load_order(root)]
    notebooks = data.get("notebooks") or {}
    problems = [f"{n}: missing from notebooks/syllabus.yaml" for n in order if n not in notebooks]
    problems += [f"{n}: not a notebook of notebooks/order.yaml" for n in notebooks if n not in order]
    for name, entry in notebooks.items():
        for dep in entry.get("builds_on") or []:
            if dep not in order or name not in order or order.index(dep) >= order.index(name):
                problems.append(f"{name}: builds_on {dep}, which is not an earlier notebook of the run order")
    path = data.get("path_90") or []
    problems += [f"path_90: {n} is not in notebooks/syllabus.yaml" for n in path if n not in notebooks]
    for i, name in enumerate(p for p in path if p in notebooks):
        missing = [d for d in notebooks[name].get("builds_on") or [] if d not in path[:i]]
        problems += [f"path_90: {name} comes before (or without) {d}, which it builds on" for d in missing]
    minutes = sum(notebooks[n]["class_minutes"] for n in path if n in notebooks)
    if minutes > PATH_MINUTES:
        problems.append(f"path_90: takes {minutes} minutes of class, more than {PATH_MINUTES}")
    if problems:
        raise SyllabusError("notebooks/syllabus.yaml: " + "; ".join(problems))
    return data


def notebook_title(nb: dict, name: str) -> str:
    """A notebook's title: its first H1 line without the ``#`` (``name`` when it has none)."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            for line in source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return name


def titles(folder: Path, names: list[str]) -> dict[str, str]:
    """``{name: title}`` of the notebooks ``folder/<name>.ipynb`` (the name where the file is missing)."""
    out = {}
    for name in names:
        path = folder / f"{name}.ipynb"
        out[name] = notebook_title(json.loads(path.read_text()), name) if path.is_file() else name
    return out


def _minutes(value: Any) -> str:
    return "not measured to the end" if value is None else f"{value:g}"


def syllabus_markdown(data: dict[str, Any], names: dict[str, str], link: str = "notebooks/{}.ipynb") -> str:
    """The syllabus page (MyST Markdown).

    Args:
        data: :func:`load_syllabus`'s result.
        names: ``{notebook: title}`` in run order (the book's notebooks; others are listed without a link).
        link: where a notebook's page is, relative to the syllabus page.
    """
    notebooks = data["notebooks"]

    def ref(name: str) -> str:
        return f"[{name[:2]}]({link.format(name)})" if name in names else name[:2]

    objectives = "\n".join(f"{i}. {o}" for i, o in enumerate(data["objectives"], 1))
    prerequisites = "\n".join(f"- {p}" for p in data["prerequisites"])
    rows = "\n".join(
        f"| {ref(n)} | {names.get(n, n).split(' — ', 1)[-1]} | {e['learn']} | "
        f"{', '.join(d[:2] for d in e.get('builds_on') or []) or '-'} | {_minutes(e['run_minutes'])} | "
        f"{e['class_minutes']} |" for n, e in notebooks.items())
    levels = _levels(notebooks)
    layers = "\n".join(f"{i}. {', '.join(ref(n) for n in level)}" for i, level in enumerate(levels, 1))
    path = data["path_90"]
    steps = "\n".join(f"{i}. {ref(n)} {names.get(n, n).split(' — ', 1)[-1]} ({notebooks[n]['class_minutes']} min)"
                      for i, n in enumerate(path, 1))
    total = sum(notebooks[n]["class_minutes"] for n in path)
    return f"""# Syllabus

A course on *Vision Transformers Need Registers* in twelve notebooks: each states a claim of the paper,
measures it and judges the measurement.

## Learning objectives

After the course you can:

{objectives}

## Prerequisites

{prerequisites}

## The notebooks

"Run" is the lecture profile's CPU time on 2 CPU cores (`make lecture`, small pretrained models at 224 px;
measured with random weights of the same architectures, see the README's lecture table). "Class" is a
suggested slot: reading, running, one exercise. "Builds on" names the notebooks to take first.

| notebook | title | you learn to | builds on | run, CPU min | class, min |
|---|---|---|---|---|---|
{rows}

## The dependency map

Each level needs only notebooks of the levels above it:

{layers}

## A 90-minute lecture

The tour, the two symptoms (spiky maps, high norms), their cause and the fix, in {total} minutes:

{steps}

In class, open the notebooks with `VITREG_PROFILE=lecture make lab` (they take the lecture parameters), or
hand out the student copies of `make handout` (the same parameters, an empty cell for each answer). Download
the lecture's weights once beforehand, with a connection (the README's lecture section lists them).
"""


def _levels(notebooks: dict[str, Any]) -> list[list[str]]:
    """The notebooks by level of the dependency map: level 1 builds on nothing, level k on levels < k."""
    level: dict[str, int] = {}
    for name, entry in notebooks.items():  # run order: what a notebook builds on comes first
        level[name] = 1 + max((level[d] for d in entry.get("builds_on") or [] if d in level), default=0)
    return [[n for n in notebooks if level[n] == k] for k in range(1, max(level.values(), default=0) + 1)]
