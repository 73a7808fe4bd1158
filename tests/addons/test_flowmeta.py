"""The flow-metadata keys: spelled once, in addons/flowmeta.py (and, on purpose, in the fallback
of addons/gateway.py, which must agree)."""

import ast
import importlib.util
from pathlib import Path

from mitmproxy.test import tflow

from toolgate.addons import flowmeta

ROOT = Path(__file__).resolve().parents[2]
FLOWMETA = ROOT / "addons" / "flowmeta.py"
GATEWAY = ROOT / "addons" / "gateway.py"
KEYS = {name: value for name, value in vars(flowmeta).items() if name.isupper()}


def load_gateway_script():
    spec = importlib.util.spec_from_file_location("toolgate_gateway_script", GATEWAY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_key_is_toolgate_s_own_and_distinct():
    assert KEYS
    assert all(value == f"toolgate.{name.lower()}" for name, value in KEYS.items())
    assert len(set(KEYS.values())) == len(KEYS)


def test_flowmeta_imports_nothing():
    tree = ast.parse(FLOWMETA.read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_no_other_source_spells_a_key():
    keys = set(KEYS.values())
    spelled = []
    for folder in ("addons", "rules", "sessions", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path in (FLOWMETA, GATEWAY):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in keys:
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}")
    assert spelled == []


def test_the_gateway_fallback_marks_its_refusal_under_flowmeta_s_key():
    gateway = load_gateway_script()
    assert gateway.REFUSED == flowmeta.REFUSED
    flow = tflow.tflow()
    gateway.Unavailable("the chain did not load").request(flow)
    assert flow.response.status_code == 503
    assert flow.metadata[flowmeta.REFUSED] == "unavailable"


def test_the_gateway_fallback_leaves_a_call_refused_under_flowmeta_s_key_alone():
    gateway = load_gateway_script()
    flow = tflow.tflow()
    flow.metadata[flowmeta.REFUSED] = "blocked"
    gateway.Unavailable("the chain did not load").request(flow)
    assert flow.response is None
    assert flow.metadata[flowmeta.REFUSED] == "blocked"
