"""Packaging: toolgate installs under its own name, never as generic top-level modules, and
every module of the checkout imports through `toolgate.*` only."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("addons", "rules", "sessions", "scripts")


def source_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_package_folder_is_installed_under_toolgate():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {"toolgate." + ".".join(p.parent.relative_to(ROOT).parts)
             for f in FOLDERS for p in (ROOT / f).rglob("__init__.py")}
    assert found == listed
    assert config["package-dir"] == {f"toolgate.{f}": f for f in FOLDERS}


def test_no_module_imports_a_generic_top_level_name():
    """From a checkout, `import rules` would still work (the working directory is on sys.path)
    and make a second copy of every module: all imports name `toolgate.*`."""
    offenders = []
    for path in source_files(*FOLDERS, "tests"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                     else [])
            offenders += [f"{path.relative_to(ROOT)}: import {n}" for n in names
                          if n.split(".")[0] in FOLDERS]
    assert offenders == []


def test_pure_rooms_do_not_import_mitmproxy():
    """The pure code the CLI uses stays free of mitmproxy."""
    pure = [ROOT / "addons" / p for p in (
        "identity/oidc.py", "approvals/holds.py", "approvals/ledger.py", "credentials/vault.py",
        "credentials/echoes.py", "policy/decoding.py", "policy/rulefiles.py", "settings.py")]
    # sessions/export.py writes mitmproxy's own .mitm format with mitmproxy's writer
    pure += [p for p in source_files("rules", "sessions") if p.name != "export.py"]
    for path in pure:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] == "mitmproxy" for n in names), path


def test_the_library_never_imports_the_cli_side():
    """scripts/ (the command line, the admin HTTP client, demo helpers) sits on top: sessions/,
    rules/ and addons/ never import it, at the top of a module or inside a function."""
    offenders = []
    for path in source_files("sessions", "rules", "addons"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: import {n}" for n in names
                          if n == "toolgate.scripts" or n.startswith("toolgate.scripts.")]
    assert offenders == []


def test_the_cli_prints_the_addon_script_path(tmp_path):
    out = subprocess.run([sys.executable, "-m", "toolgate.scripts.cli", "gateway", "path"],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out) == ROOT / "addons" / "gateway.py"


def test_the_wheel_holds_only_toolgate(tmp_path):
    # built from a copy: setuptools writes build/ beside the sources
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".toolgate", "build", "*.egg-info", "__pycache__", ".pytest_cache",
        "target", "*.so", "_core.abi"))
    # the crate is compiled again for the wheel, in a target folder of its own that later runs reuse
    env = {**os.environ, "CARGO_TARGET_DIR": str(ROOT / "core" / "target" / "wheel")}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--disable-pip-version-check", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True, timeout=600, env=env)
    (wheel,) = tmp_path.glob("toolgate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"toolgate"}
    expected = {"toolgate/" + str(p.relative_to(ROOT)) for p in source_files(*FOLDERS)}
    assert expected <= set(names)
    assert "toolgate/rules/packs/pii.yaml" in names
    assert "toolgate/addons/gateway.py" in names
    assert any(n.startswith("toolgate/rules/_core.") and n.endswith(".so") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "toolgate = toolgate.scripts.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_no_two_classes_share_a_name_across_the_source():
    """A name says one thing: `Identity`, `Grant`, `Finding`, `Source` each meant two."""
    where: dict[str, list[str]] = {}
    for path in source_files(*FOLDERS):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                where.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}
