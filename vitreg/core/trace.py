"""A trace of what a run loads and forwards: one JSON line per model load and per forwarded batch.

Paper: every finding (what an experiment declares it does, checked against what it did). Set
``VITREG_TRACE=/path/to/trace.jsonl`` and every :func:`vitreg.core.weights.load_model` appends
``{"event": "load", "model": key, "size": [H, W], "pretrained": bool}`` and every forward of a
:class:`vitreg.core.weights.LoadedModel` (the one batching loop, :func:`vitreg.core.stream.stream`, and
the few single forwards beside it) appends ``{"event": "forward", "model": key, "size": [H, W], "images": n}``.
The variable is read at call time, so a test sets it around a run (the notebook kernels inherit it); unset,
nothing is written. The file is a log that only grows: each event is one ``write`` of one line in append mode
(never a file rewritten in place, so the atomic writes of :mod:`vitreg.utils.io` are not needed).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: The environment variable naming the trace file.
TRACE_ENV = "VITREG_TRACE"


def _append(event: dict[str, Any]) -> None:
    path = os.environ.get(TRACE_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")


def loaded(model: str, size: Sequence[int], pretrained: bool) -> None:
    """Record that ``model`` was loaded at ``size`` (``(H, W)``) pixels."""
    _append({"event": "load", "model": model, "size": [int(s) for s in size], "pretrained": bool(pretrained)})


def forwarded(model: str, size: Sequence[int], images: int) -> None:
    """Record one forward of ``images`` images of ``size`` (``(H, W)``) pixels through ``model``."""
    _append({"event": "forward", "model": model, "size": [int(s) for s in size], "images": int(images)})


def read(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The events of a trace file, in order (an absent file: none)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def loads(events: Iterable[dict[str, Any]]) -> list[str]:
    """The models loaded, in load order (a model loaded twice is listed twice)."""
    return [e["model"] for e in events if e["event"] == "load"]


def images_per_model(events: Iterable[dict[str, Any]]) -> Counter:
    """Images forwarded per model, summed over every forward."""
    out: Counter = Counter()
    for e in events:
        if e["event"] == "forward":
            out[e["model"]] += e["images"]
    return out
