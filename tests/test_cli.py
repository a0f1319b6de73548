from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared_core import __version__
from shared_core.cli import main


def test_version_and_help(capsys) -> None:
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_demo_writes_plot_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "demo.png"
    assert main(["demo", "-o", str(out), "--steps", "20", "--num-samples", "500", "--seed", "3"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((tmp_path / "demo.png.json").read_text())
    assert manifest["seed"] == 3 and manifest["sampler"] == "dpmpp_2m" and manifest["steps"] == 20
    assert manifest["version"] == __version__
    assert manifest["sliced_w2"] < 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.png", "demo.png.json"]  # no temp files left


def test_demo_bad_input_one_line_exit_2(tmp_path: Path) -> None:
    cases = [
        ["demo", "-o", str(tmp_path / "x.jpg")],
        ["demo", "-o", str(tmp_path / "missing" / "x.png")],
        ["demo", "-o", str(tmp_path / "x.png"), "--sampler", "nope"],
        ["demo", "-o", str(tmp_path / "x.png"), "--steps", "0"],
    ]
    for args in cases:
        r = subprocess.run([sys.executable, "-m", "shared_core.cli", *args], capture_output=True, text=True)
        assert r.returncode == 2, args
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("extradim: error:"), r.stderr
        assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_eval_help_lists_targets(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["eval", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: extradim eval" in out and "TARGET" in out
    assert main(["eval"]) == 0  # no target: the same help, exit 0
    assert "usage: extradim eval" in capsys.readouterr().out


def test_an_extension_that_fails_to_import_breaks_only_its_own_command(monkeypatch, capsys) -> None:
    """E.g. an eval target whose module needs a missing package: the other commands must still work."""
    import shared_core.cli as cli

    class _EP:
        def __init__(self, name: str, load) -> None:
            self.name, self.value, self._load = name, f"ext.{name}:register", load

        def load(self):
            return self._load()

    def broken():
        raise ModuleNotFoundError("No module named 'trimesh'")

    def hello(sub) -> None:
        p = sub.add_parser("hello")
        p.add_argument("--n", type=int, default=1)
        p.set_defaults(func=lambda a: print("hello" * a.n) or 0)

    groups = {
        "extradim.commands": [_EP("hello", lambda: hello), _EP("mesh", broken)],
        "extradim.evals": [_EP("mesh", broken)],
    }
    monkeypatch.setattr(cli, "entry_points", lambda group: groups[group])
    assert main(["hello", "--n", "2"]) == 0
    assert capsys.readouterr().out == "hellohello\n"
    why = "extension command 'mesh' (ext.mesh:register) failed to load: No module named 'trimesh'"
    for args in (["x.glb", "--seed", "3"], ["--seed", "3"], ["--help"], ["-o", "x.glb"], []):
        assert main(["mesh", *args]) == 2, args  # any arguments: the import error, one line
        assert capsys.readouterr().err == f"extradim: error: {why}\n"
    assert main(["eval", "mesh", "--per-class", "2"]) == 2  # an eval target works the same way
    assert "extension eval 'mesh' (ext.mesh:register) failed to load" in capsys.readouterr().err
    assert main([]) == 0
    assert "unavailable" in capsys.readouterr().out  # the help lists it as unavailable


def test_a_missing_optional_dependency_at_run_time_is_one_line(monkeypatch, capsys) -> None:
    import shared_core.cli as cli

    def lazy(sub) -> None:
        def run(_) -> int:
            import extradim_no_such_module  # noqa: F401  (a lazily imported optional dependency)

            return 0

        sub.add_parser("lazy").set_defaults(func=run)

    groups = {"extradim.commands": [type("EP", (), {"name": "lazy", "value": "x", "load": lambda s: lazy})()]}
    monkeypatch.setattr(cli, "entry_points", lambda group: groups.get(group, []))
    assert main(["lazy"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("extradim: error: No module named 'extradim_no_such_module'") and err.count("\n") == 1
    )
