"""Safe output: atomic writes (temp file in the same folder, then rename) and JSON manifests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shared_core import __version__
from shared_core.errors import ExtradimError

__all__ = [
    "atomic_path",
    "check_out_dir",
    "check_writable",
    "file_sha256",
    "progress_callback",
    "write_json",
    "write_manifest",
]


def check_writable(path: str | os.PathLike[str], suffixes: tuple[str, ...] | None = None) -> Path:
    """Validate an output path before any work is done: known suffix, existing writable folder."""
    p = Path(path)
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise ExtradimError(
            f"unsupported output extension {p.suffix or '(none)'!r} for {p}; use {', '.join(suffixes)}"
        )
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ExtradimError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise ExtradimError(f"output folder is not writable: {parent}")
    if p.is_dir():
        raise ExtradimError(f"output path is a folder: {p}")
    return p


def check_out_dir(path: str | os.PathLike[str], names: tuple[str, ...] = ()) -> Path:
    """An output folder, checked before any work but not created: not a file, its nearest existing
    parent writable, and none of the ``names`` it will receive already a folder.

    Raises:
        ExtradimError: one line naming the problem.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ExtradimError(f"--out is not a folder: {out}")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        raise ExtradimError(f"output folder is not writable: {existing}")
    for name in names:
        if (out / name).is_dir():
            raise ExtradimError(f"output path is a folder: {out / name}")
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on error remove
    it. Readers never see a half-written file."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=f".tmp{p.suffix}", dir=p.parent or ".")
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file 0600; give it the permissions a plain open() would (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(output: str | os.PathLike[str], **fields: Any) -> Path:
    """Write ``<output>.json`` beside an output: the given fields plus the extradim version."""
    out = Path(output)
    return write_json(
        out.with_name(out.name + ".json"), {"version": __version__, "output": out.name, **fields}
    )


def progress_callback(bar: Any) -> Callable[[dict[str, Any]], None]:
    """A sampler callback that advances a tqdm bar and shows the noise level."""

    def cb(info: dict[str, Any]) -> None:
        bar.set_postfix(sigma=f"{float(info['sigma']):.3g}", refresh=False)
        bar.update(1)

    return cb
