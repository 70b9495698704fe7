"""The schema of ``data/paper_numbers.yaml``: what is wrong with an entry, and the ``annotations`` section.

Paper: every finding (F1-F9); the numbers themselves are read only through :mod:`vitreg.claims.paper`, which
calls these checks when it loads the file. Layer: presentation (beside :mod:`vitreg.claims.paper`; imports
nothing from vitreg).
"""

from __future__ import annotations

from typing import Any

ENTRY_FIELDS = ("id", "finding", "source", "origin", "what", "value", "unit", "model", "notebook", "key",
                "reproducible")
#: Fields that say under which protocol a number was measured, and why its rule is what it is. An entry
#: may carry them itself, or the data file's ``annotations`` section adds them to an entry by id.
ANNOTATION_FIELDS = ("resolution", "images", "min_images", "why", "no_effect")


def entry_problems(e: dict, findings: set[str]) -> list[str]:
    """What is wrong with one entry of the data file (empty when nothing)."""
    missing = [k for k in ENTRY_FIELDS if k not in e]
    if missing:
        return [f"missing {missing}"]
    problems = []
    if e["finding"] not in findings:
        problems.append(f"finding {e['finding']!r} is not among {sorted(findings)}")
    derived = [d for d in ("delta", "ratio") if e.get(d) is not None]
    if len(derived) > 1:
        problems.append("give delta or ratio, not both")
    if derived:
        ops = e[derived[0]]
        if not (isinstance(ops, list) and len(ops) == 2 and all(isinstance(k, str) and k for k in ops)):
            problems.append(f"{derived[0]} must be a list of two results keys, got {ops!r}")
        if e["key"] is not None or e["notebook"] is None:
            problems.append(f"a {derived[0]} entry names its notebook and no key (its keys are the two operands)")
        models = e.get("operand_models")
        if models is not None and not (isinstance(models, list) and len(models) == 2):
            problems.append("operand_models must be a list of two zoo keys")
    elif (e["notebook"] is None) != (e["key"] is None):
        problems.append("give both notebook and key, or neither")
    rep = e["reproducible"]
    if rep not in (True, False, "proxy"):
        problems.append(f"reproducible must be true, false or proxy, got {rep!r}")
    if (rep is False or rep == "proxy" or e["notebook"] is None) and not e.get("reason"):
        problems.append("a number that is not (fully) reproducible, or that no notebook computes, needs a reason")
    compare = e.get("compare", "approx")
    if compare not in ("approx", "at_least", "at_most"):
        problems.append(f"compare must be approx, at_least or at_most, got {compare!r}")
    if e["notebook"] is not None and rep is not False:
        if e["value"] is None:
            problems.append("a compared number needs a value")
        if compare == "approx" and not isinstance(e.get("tolerance"), (int, float)):
            problems.append("compare approx needs a numeric tolerance")
    if e["value"] is not None and (isinstance(e["value"], bool) or not isinstance(e["value"], (int, float))):
        problems.append("value must be a number or null")
    return problems + annotation_problems(e)


def annotation_problems(a: dict) -> list[str]:
    """What is wrong with the protocol fields of an entry or of an ``annotations`` item."""
    problems = []
    for k in ("resolution", "images", "min_images"):
        v = a.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            problems.append(f"{k} must be a positive integer, got {v!r}")
    if a.get("why") is not None and not isinstance(a["why"], str):
        problems.append("why must be text")
    v = a.get("no_effect")
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
        problems.append(f"no_effect must be a number, got {v!r}")
    return problems


def primary_problems(primary: Any, entries: list, finding_ids: tuple[str, ...]) -> list[str]:
    """What is wrong with the ``primary`` section (finding -> its pre-registered claim ids): each id names an
    entry of that finding that a notebook compares (not a reference public assets do not allow), once."""
    if not isinstance(primary, dict):
        return ["primary: expected a mapping of finding to a list of entry ids"]
    by_id = {e.get("id"): e for e in entries if isinstance(e, dict)}
    problems = []
    for fid, ids in primary.items():
        where = f"primary[{fid!r}]"
        if fid not in finding_ids:
            problems.append(f"{where}: not a finding ({', '.join(finding_ids)})")
            continue
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            problems.append(f"{where}: expected a list of entry ids")
            continue
        if len(set(ids)) < len(ids):
            problems.append(f"{where}: names an entry twice")
        for i in ids:
            e = by_id.get(i)
            if e is None:
                problems.append(f"{where}: {i!r} is not an entry")
            elif e.get("finding") != fid:
                problems.append(f"{where}: {i!r} belongs to {e.get('finding')}")
            elif e.get("notebook") is None or e.get("reproducible") is False or e.get("value") is None:
                problems.append(f"{where}: {i!r} is not compared by any notebook")
    return problems


def annotate(entries: list, annotations: Any) -> list[str]:
    """Add the ``annotations`` section's fields (by id) to the entries; what is wrong with it."""
    if annotations is None:
        return []
    if not isinstance(annotations, dict):
        return ["annotations: expected a mapping of entry id to fields"]
    by_id = {e.get("id"): e for e in entries if isinstance(e, dict)}
    problems = []
    for eid, fields in annotations.items():
        where = f"annotations[{eid!r}]"
        if eid not in by_id:
            problems.append(f"{where}: no entry with that id")
        elif not isinstance(fields, dict) or set(fields) - set(ANNOTATION_FIELDS):
            problems.append(f"{where}: expected a mapping with fields among {ANNOTATION_FIELDS}")
        elif set(fields) & set(by_id[eid]):
            problems.append(f"{where}: {sorted(set(fields) & set(by_id[eid]))} already on the entry")
        else:
            problems += [f"{where}: {p}" for p in annotation_problems(fields)]
            by_id[eid].update(fields)
    return problems
