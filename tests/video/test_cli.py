"""`extradim video` end to end on a tiny random checkpoint: outputs, manifests, seeds, bad input."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import imageio.v3 as iio
import pytest

from shared_core import __version__
from shared_core.io import file_sha256

PROMPT = "a red circle moving left"


def _video(cli, tiny_checkpoint: Path, *args: str) -> int:
    return cli(["video", *args, "--checkpoint", str(tiny_checkpoint), "--steps", "2"])


def test_writes_clip_and_manifest(cli, tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "clip.mp4"
    assert _video(cli, tiny_checkpoint, PROMPT, "-o", str(out), "--seed", "3", "--guidance", "2") == 0
    assert iio.imread(out, plugin="pyav").shape == (16, 128, 128, 3)
    m = json.loads((tmp_path / "clip.mp4.json").read_text())
    assert m["prompt"] == PROMPT and m["seed"] == 3 and m["steps"] == 2 and m["guidance"] == 2.0
    assert m["sampler"] == "dpmpp_2m" and m["version"] == __version__ and m["time"]
    assert m["checkpoint"] == str(tiny_checkpoint) and m["checkpoint_sha256"] == file_sha256(tiny_checkpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "clip.mp4.json"]
    assert "wrote" in capsys.readouterr().out


def test_seed_reproducibility_and_batch_file(cli, tiny_checkpoint: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    assert _video(cli, tiny_checkpoint, PROMPT, "-o", str(a), "--seed", "7") == 0
    assert _video(cli, tiny_checkpoint, PROMPT, "-o", str(b), "--seed", "7") == 0
    assert _video(cli, tiny_checkpoint, PROMPT, "-o", str(c), "--seed", "8") == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{PROMPT}\n\n   \na blue square growing\na purple elephant dancing\n")
    batch = tmp_path / "batch" / "clips.png"
    batch.parent.mkdir()
    args = ["--batch-file", str(prompts), "-o", str(batch), "--seed", "7", "--batch-size", "2"]
    assert _video(cli, tiny_checkpoint, *args) == 0
    names = sorted(p.name for p in batch.parent.iterdir())
    assert names == [f"clips_{i:03d}.png{s}" for i in range(3) for s in ("", ".json")]
    # Prompt 0 of the file uses noise (seed, 0), as the single prompt does; batching changes only
    # float round-off (at most one 8-bit level here).
    diff = iio.imread(batch.parent / "clips_000.png").astype(int) - iio.imread(a).astype(int)
    assert abs(diff).max() <= 1
    m = json.loads((batch.parent / "clips_002.png.json").read_text())
    assert m["prompt"] == "a purple elephant dancing" and m["prompt_index"] == 2


def _bad_cases(tmp_path: Path, tiny_checkpoint: Path) -> list[list[str]]:
    corrupt = tmp_path / "ckpt" / "bad.safetensors"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a safetensors file")
    shutil.copy(tiny_checkpoint.with_suffix(".yaml"), corrupt.with_suffix(".yaml"))
    empty_file = tmp_path / "ckpt" / "empty.txt"
    empty_file.write_text("\n  \n")
    out = str(tmp_path / "out" / "x.mp4")
    ckpt = ["--checkpoint", str(tiny_checkpoint)]
    return [
        ["video", "", "-o", out, *ckpt],
        ["video", "  \t ", "-o", out, *ckpt],
        ["video", "-o", out, *ckpt],
        ["video", PROMPT, "-o", str(tmp_path / "out" / "x.avi"), *ckpt],
        ["video", PROMPT, "-o", str(tmp_path / "out" / "missing" / "x.mp4"), *ckpt],
        ["video", PROMPT, "-o", out, "--checkpoint", str(tmp_path / "nope.safetensors")],
        ["video", PROMPT, "-o", out, "--checkpoint", str(corrupt)],
        ["video", PROMPT, "-o", out, *ckpt, "--sampler", "nope"],
        ["video", PROMPT, "-o", out, *ckpt, "--steps", "0"],
        ["video", PROMPT, "-o", out, *ckpt, "--batch-file", str(empty_file)],
        ["video", "-o", out, *ckpt, "--batch-file", str(empty_file)],
        ["video", "-o", out, *ckpt, "--batch-file", str(tmp_path / "no_such.txt")],
    ]


def test_bad_input_one_line_exit_2_nothing_written(
    cli, tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "out").mkdir()
    for args in _bad_cases(tmp_path, tiny_checkpoint):
        assert cli(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("extradim: error:") and err.count("\n") == 1, (args, err)
        assert "Traceback" not in err
        assert list((tmp_path / "out").iterdir()) == [], args


def test_long_prompt_warns_in_one_line(cli, tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    long_prompt = "a green triangle moving up " + " ".join(f"word{i}" for i in range(60))
    out = tmp_path / "long.gif"
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        assert _video(cli, tiny_checkpoint, long_prompt, "-o", str(out)) == 0
    assert not [w for w in escaped if issubclass(w.category, UserWarning)]
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and err[0].startswith("extradim: warning: prompt truncated to 32 tokens"), err
    assert out.is_file()
    assert json.loads((tmp_path / "long.gif.json").read_text())["prompt"] == long_prompt


def test_help_lists_the_command(cli, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["video", "--help"])
    assert info.value.code == 0
    assert "--batch-file" in capsys.readouterr().out
