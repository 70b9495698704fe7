"""The dotted paths of a results record with per-model parts (what ``data/paper_numbers.yaml``'s keys resolve to)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vitreg.experiments.base import record_paths


@dataclass(frozen=True)
class _Part:
    share: float | dict[str, str]


@dataclass(frozen=True)
class _Record:
    per_model: dict[str, _Part] = field(metadata={"keys": ("a", "b")})
    maybe: dict[str, _Part] | None = field(default=None, metadata={"keys": ("c",)})
    one: _Part | None = None
    value: float | dict[str, str] = 0.0


def test_a_plain_dict_field_lists_its_keys_and_their_fields():
    paths = record_paths(_Record)
    assert {"per_model.a", "per_model.a.share", "per_model.b.share"} <= paths
    assert "per_model.share" not in paths   # the dict's value type is not a field of the record


def test_optional_dicts_and_parts_are_followed_and_unions_of_values_are_leaves():
    paths = record_paths(_Record)
    assert {"maybe.c", "maybe.c.share", "one", "one.share", "value"} <= paths
    assert not any(p.startswith("value.") for p in paths)
