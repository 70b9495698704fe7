"""Results records as the plain mappings ``results/<notebook>.json`` holds under ``numbers``.

Paper: every number a notebook saves. A record's optional parts (a dataclass field left None: a twin the model
does not have, a model the run did not load) are left out of the mapping rather than written as null, so the
saved keys are those the run measured.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any


def to_numbers(record: Any) -> dict[str, Any]:
    """``record`` (a dataclass) as a plain mapping, nested records and ``dict`` values of records included;
    fields that are None are left out.

    Args:
        record: a results record (see :func:`vitreg.experiments.base.record_paths`).

    Returns:
        the ``numbers`` mapping to save.
    """
    if not dataclasses.is_dataclass(record) or isinstance(record, type):
        raise TypeError(f"expected a results record (a dataclass instance), got {type(record).__name__}")
    return _plain(record)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(v) for f in dataclasses.fields(value) if (v := getattr(value, f.name)) is not None}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return copy.deepcopy(value)
