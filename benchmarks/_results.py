"""What the probe scripts share: writing their JSON result where ``--out`` says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared_core.io import write_json


def save_result(out: Path | None, result: dict[str, Any]) -> None:
    """Write ``result`` to ``out`` (parents created, atomically) when ``out`` is given."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
