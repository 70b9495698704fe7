"""Atomic writes: nothing half-written; JSON refuses what it cannot represent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vitreg.io import atomic_write_json


def test_json_takes_arrays_and_paths_but_not_tuple_keys_or_nan(tmp_path):
    path = atomic_write_json(tmp_path / "a.json", {"x": np.arange(3), "p": Path("/a/b")})
    assert json.loads(path.read_text()) == {"x": [0, 1, 2], "p": "/a/b"}
    with pytest.raises(TypeError, match="keys must be"):
        atomic_write_json(tmp_path / "b.json", {("a", 1): 2})
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "c.json", {"x": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary files left behind
