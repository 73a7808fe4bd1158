"""Every `evaluate` of the test run, checked against the reference engine (pytest plugin).

Registered by tests/conftest.py: each call of `toolgate.rules.evaluate` anywhere in the test
process (the rule tests, the addons' tests with `taddons`, the CLI's) is also given to the pure-
Python reference engine, and any difference in the decision (action, findings, reasons, rules,
forwarded and recorded bodies) fails the call with both versions side by side. The summary line
says how many calls were compared."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from reference import engine as reference

COMPARED = {"calls": 0, "findings": 0}
_BOUND = ("toolgate.rules", "toolgate.rules.engine", "toolgate.addons.policy.addon",
          "toolgate.sessions.whatif", "toolgate.scripts.cli_rules", "toolgate.scripts.bench_rules")


def comparable(decision: Any) -> dict[str, Any]:
    data = decision.as_dict()
    data["changed"] = decision.changed
    data["record_body"] = decision.record_body
    data["record_query"] = decision.record_query
    data["record_is_forwarded"] = decision.record_body is decision.body
    data["findings_tuples"] = [tuple(f) for f in decision.findings]
    return data


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {key: (expected[key], actual.get(key)) for key in expected if expected[key] != actual.get(key)}


def install(import_missing: bool = True) -> None:
    """Wrap `evaluate` wherever it is bound (importing those modules first, unless told not to:
    inside a gateway only what the gateway imported matters)."""
    import toolgate.rules.engine as engine

    native_evaluate = engine.evaluate

    def evaluate(ruleset, call, mask_key, *, monitor=False):
        try:
            expected = reference.evaluate(ruleset, call, mask_key, monitor=monitor)
        except Exception as exc:  # noqa: BLE001 - the core must fail the same way
            actual = None
            try:
                actual = native_evaluate(ruleset, call, mask_key, monitor=monitor)
            except type(exc):
                raise
            raise AssertionError(f"the reference raised {exc!r}, the core answered {actual!r}")
        actual = native_evaluate(ruleset, call, mask_key, monitor=monitor)
        diff = differences(comparable(expected), comparable(actual))
        if diff:
            raise AssertionError(f"the core and the reference disagree on {call!r}: {diff}")
        COMPARED["calls"] += 1
        COMPARED["findings"] += len(actual.findings)
        return actual

    evaluate.__wrapped__ = native_evaluate
    for name in _BOUND:
        module = sys.modules.get(name)
        if module is None:
            if not import_missing:
                continue
            __import__(name)
            module = sys.modules[name]
        if getattr(module, "evaluate", None) is native_evaluate:
            module.evaluate = evaluate


def pytest_configure(config) -> None:
    install()


def pytest_sessionfinish(session) -> None:
    """Under pytest-xdist, a worker hands its counts to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["differential"] = dict(COMPARED)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: the controller adds up its workers
def pytest_testnodedown(node, error) -> None:
    for key, value in getattr(node, "workeroutput", {}).get("differential", {}).items():
        COMPARED[key] += value


def pytest_terminal_summary(terminalreporter) -> None:
    terminalreporter.write_line(
        f"differential: {COMPARED['calls']} evaluate() calls of the run checked against the reference "
        f"engine ({COMPARED['findings']} findings), no difference"
    )
