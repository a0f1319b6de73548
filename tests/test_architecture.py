"""The dependency rule: video, threed and packages/* import only shared_core (never each other);
shared_core imports none of them. Checked on the source, so a broken rule fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODALITIES = {"video", "threed"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _package_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.py") if ".venv" not in p.parts]


def _extension_packages() -> dict[str, list[Path]]:
    out = {}
    for pkg in sorted((ROOT / "packages").glob("*/")):
        if (pkg / "pyproject.toml").exists():
            out[pkg.name] = _package_files(pkg)
    return out


def violations() -> list[str]:
    """Every import that breaks the rule, as 'path imports name'."""
    ext = _extension_packages()
    # the import names an extension package provides (its top-level modules)
    ext_names = {
        name: {p.relative_to(ROOT / "packages" / name).parts[0].removesuffix(".py") for p in files}
        for name, files in ext.items()
    }
    all_ext = set().union(*ext_names.values()) if ext_names else set()
    rules = {
        "shared_core": MODALITIES | all_ext,
        "video": {"threed"} | all_ext,
        "threed": {"video"} | all_ext,
    }
    bad = []
    for pkg, forbidden in rules.items():
        for f in _package_files(ROOT / pkg):
            bad.extend(f"{f.relative_to(ROOT)} imports {n}" for n in sorted(_imports(f) & forbidden))
    for name, files in ext.items():
        forbidden = MODALITIES | (all_ext - ext_names[name])
        for f in files:
            bad.extend(f"{f.relative_to(ROOT)} imports {n}" for n in sorted(_imports(f) & forbidden))
    return bad


def test_dependency_rule_holds() -> None:
    assert violations() == []


def test_checker_catches_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant a forbidden import in a copy of the layout: the checker must report it."""
    for pkg in ("shared_core", "video", "threed", "packages"):
        (tmp_path / pkg).mkdir()
    (tmp_path / "shared_core" / "x.py").write_text("from video import model\n")
    (tmp_path / "video" / "y.py").write_text("import shared_core\nimport threed.mesh\n")
    (tmp_path / "threed" / "z.py").write_text("import shared_core\n")
    ext = tmp_path / "packages" / "extradim-audio"
    (ext / "extradim_audio").mkdir(parents=True)
    (ext / "pyproject.toml").write_text("[project]\nname='extradim-audio'\n")
    (ext / "extradim_audio" / "__init__.py").write_text("import shared_core\nfrom video import data\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = violations()
    assert "shared_core/x.py imports video" in found
    assert "video/y.py imports threed" in found
    assert any(v.startswith("packages/extradim-audio") and v.endswith("imports video") for v in found)
    assert not any(v.startswith("threed") for v in found)
