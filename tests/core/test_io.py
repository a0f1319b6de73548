"""Output-path checks and atomic writes shared by every CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_core.errors import ExtradimError
from shared_core.io import atomic_path, check_out_dir, check_writable, write_json, write_manifest


def test_check_writable(tmp_path: Path) -> None:
    assert check_writable(tmp_path / "a.gif", (".gif", ".mp4")) == tmp_path / "a.gif"
    with pytest.raises(ExtradimError, match=r"unsupported output extension '\.txt'"):
        check_writable(tmp_path / "a.txt", (".gif",))
    with pytest.raises(ExtradimError, match="does not exist"):
        check_writable(tmp_path / "missing" / "a.gif")
    (tmp_path / "d.gif").mkdir()
    with pytest.raises(ExtradimError, match="is a folder"):
        check_writable(tmp_path / "d.gif")


def test_atomic_path_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_check_out_dir(tmp_path: Path) -> None:
    assert check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not created
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExtradimError, match="not a folder"):
        check_out_dir(tmp_path / "file")
    (tmp_path / "out" / "eval.json").mkdir(parents=True)
    with pytest.raises(ExtradimError, match="is a folder"):
        check_out_dir(tmp_path / "out", ("eval.json",))


def test_manifest_beside_output(tmp_path: Path) -> None:
    out = tmp_path / "clip.gif"
    manifest = write_manifest(out, prompt="a red circle", seed=3)
    assert manifest.parent == tmp_path and "a red circle" in manifest.read_text()
    assert '"k": 1' in write_json(tmp_path / "x.json", {"k": 1}).read_text()
