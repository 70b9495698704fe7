"""Atomic writes: nothing half-written; JSON refuses what it cannot represent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vitreg.utils.io import atomic_write_json


@pytest.mark.robustness("clear error")
def test_json_takes_arrays_and_paths_but_not_tuple_keys_or_nan(tmp_path):
    path = atomic_write_json(tmp_path / "a.json", {"x": np.arange(3), "p": Path("/a/b")})
    assert json.loads(path.read_text()) == {"x": [0, 1, 2], "p": "/a/b"}
    with pytest.raises(TypeError, match="keys must be"):
        atomic_write_json(tmp_path / "b.json", {("a", 1): 2})
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "c.json", {"x": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary files left behind


@pytest.mark.robustness("handled")
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=["umask022", "umask002", "umask077"])
def test_atomic_files_get_the_mode_open_would_give(tmp_path, umask):
    """A shared cache or course folder stays readable: mkstemp's 0600 is not what the user asked for."""
    import os
    import stat

    from vitreg.utils.io import atomic_torch_save, atomic_write_text

    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        atomic_torch_save({"a": 1}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert want == 0o666 & ~umask
    for name in ("a.txt", "r.json", "c.pt"):
        assert oct(stat.S_IMODE((tmp_path / name).stat().st_mode)) == oct(want), name


@pytest.mark.robustness("handled")
def test_atomic_rewrite_keeps_the_existing_files_mode(tmp_path):
    import os
    import stat

    from vitreg.utils.io import atomic_write_text

    path = tmp_path / "shared.txt"
    path.write_text("old")
    os.chmod(path, 0o664)
    atomic_write_text(path, "new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o664 and path.read_text() == "new"
