"""pytest plugin: the summary of the bad-input and fault corpus, for ``make robustness``.

Every corpus case is a test marked ``@pytest.mark.robustness("<expectation>")``; the expectation is what
the test itself demands of the code:

* ``clear error``: the bad input is refused with an error that names the file/parameter and the fix;
* ``handled``: the input is accepted, or the damage detected and repaired (with a warning), and the
  result is right;
* ``nothing lost``: an interruption or failure leaves earlier outputs whole and nothing half-written.

Each case is classified by how its test ended:

* passed: counted under its expectation (clear error, handled, nothing lost);
* failed on an assertion (a wrong value, ``DID NOT RAISE``, ``DID NOT WARN``): ``silent wrong``, or
  ``lost`` when the case expects nothing lost;
* failed with any other exception, or with the expected error type carrying an unclear message (the
  ``match=`` of ``pytest.raises`` did not match): ``crash``;
* skipped: ``skipped`` (named in the summary, never counted as handled).

Load it with ``-p robustness_plugin`` and ``tests`` on ``PYTHONPATH`` (the Makefile target does).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

EXPECTATIONS = ("clear error", "handled", "nothing lost")
OUTCOMES = ("clear error", "handled", "nothing lost", "crash", "silent wrong", "lost", "skipped")
_UNCLEAR = ("Regex pattern did not match", "Regex: ")  # pytest.raises/warns(match=...) with another message
_SILENT = ("DID NOT RAISE", "DID NOT WARN")

_results: dict[str, tuple[str, str, str]] = {}  # nodeid -> (expectation, outcome, first line of the failure)


def expectation(item: pytest.Item) -> str | None:
    """The declared expectation of a corpus test, or None when it is not one."""
    mark = item.get_closest_marker("robustness")
    if mark is None:
        return None
    expect = mark.args[0] if mark.args else mark.kwargs.get("expect")
    if expect not in EXPECTATIONS:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.robustness({expect!r}): the expectation must be "
                                f"one of {', '.join(map(repr, EXPECTATIONS))}")
    return expect


def classify(expect: str, passed: bool, skipped: bool = False, exc_type: type | None = None,
             message: str = "") -> str:
    """The outcome of one case (see the module docstring)."""
    if skipped:
        return "skipped"
    if passed:
        return expect
    if exc_type is not None and issubclass(exc_type, AssertionError) and any(u in message for u in _UNCLEAR):
        return "crash"  # the expected kind of error, but it does not say what the test demands
    failed_check = exc_type is not None and (issubclass(exc_type, AssertionError) or any(s in message for s in _SILENT))
    if failed_check:
        return "lost" if expect == "nothing lost" else "silent wrong"
    return "crash"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    expect = expectation(item)
    if expect is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        exc = call.excinfo
        message = str(exc.value) if exc is not None else ""
        kind = classify(expect, report.passed, report.skipped, exc.type if exc is not None else None, message)
        _results[item.nodeid] = (expect, kind, message.strip().splitlines()[0][:160] if message.strip() else "")


def summary_lines(results: dict[str, tuple[str, str, str]]) -> list[str]:
    """The corpus summary: one count per outcome, then every case that is not as expected."""
    counts = Counter(kind for _, kind, _ in results.values())
    lines = [f"bad-input and fault corpus: {len(results)} cases",
             f"  clear errors   {counts['clear error']:4d}   bad input refused, naming the file or parameter and the fix",
             f"  handled        {counts['handled']:4d}   accepted, or the damage detected and repaired, with the right result",
             f"  nothing lost   {counts['nothing lost']:4d}   interrupted or failed runs leave earlier outputs whole",
             f"  crashes        {counts['crash']:4d}   an error that does not say what the case demands",
             f"  silent wrong   {counts['silent wrong']:4d}   a wrong or stale result with no error",
             f"  lost           {counts['lost']:4d}   outputs lost or half-written"]
    if counts["skipped"]:
        lines.append(f"  skipped        {counts['skipped']:4d}")
    bad = [(nodeid, kind, why) for nodeid, (_, kind, why) in results.items() if kind in ("crash", "silent wrong",
                                                                                         "lost", "skipped")]
    lines += [f"  {kind.upper()}: {nodeid}: {why}" for nodeid, kind, why in bad]
    return lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _results:
        return
    terminalreporter.section("robustness")
    for line in summary_lines(_results):
        terminalreporter.write_line(line)
