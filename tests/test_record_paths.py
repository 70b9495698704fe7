"""The dotted paths of a results record (what ``data/paper_numbers.yaml``'s keys refer to)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vitreg.experiments.base import record_paths


@dataclass
class _Part:
    corloc: float


@dataclass
class _Record:
    rows: dict[str, Any] = field(metadata={"keys": ("voc07", "voc12")})
    parts: dict[str, _Part] = field(metadata={"keys": ("a",)})
    maybe: _Part | None = None
    loose: dict[str, float] = field(default_factory=dict)


def test_dict_fields_list_their_known_keys_and_a_union_is_followed():
    """A ``dict[str, X]`` field (not only ``dict[...] | None``) lists its metadata keys, and the dataclass of
    its values is followed; ``X | None`` follows X; a dict without known keys is one path."""
    assert record_paths(_Record) == {"rows", "rows.voc07", "rows.voc12", "parts", "parts.a", "parts.a.corloc",
                                     "maybe", "maybe.corloc", "loose"}
