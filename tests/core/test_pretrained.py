"""Starting a model from another's weights (``load_state_partial``): growth and loud mismatches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from shared_core.errors import CheckpointError
from shared_core.nn import DiT, DiTConfig
from shared_core.pretrained import load_state_partial, save_pretrained


def _dit(depth: int, hidden: int = 32) -> DiT:
    cfg = DiTConfig(
        hidden_size=hidden,
        depth=depth,
        num_heads=2,
        in_channels=6,
        patch_size=None,
        context_dim=8,
        pooled_dim=8,
    )
    return DiT(cfg).eval()


def _trained(depth: int) -> DiT:
    """A DiT whose every weight is non-zero (a fresh one hides paths behind adaLN-Zero)."""
    model = _dit(depth)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def test_appended_blocks_start_as_the_identity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    small = _trained(2)
    path = save_pretrained(small, small.config, tmp_path / "small.safetensors", kind="dit")
    grown = _dit(4)
    fresh_block = {k: v.clone() for k, v in grown.state_dict().items() if k.startswith("blocks.3.")}
    assert load_state_partial(grown, path) == (
        len(small.state_dict()),
        len(grown.state_dict()) - len(small.state_dict()),
    )
    x, t = torch.randn(2, 16, 6), torch.tensor([5.0, 500.0])
    cond = {"context": torch.randn(2, 3, 8), "pooled": torch.randn(2, 8)}
    with torch.no_grad():
        torch.testing.assert_close(grown(x, t, **cond), small(x, t, **cond), rtol=0, atol=0)
    for k, v in fresh_block.items():  # the new blocks keep their initialisation
        torch.testing.assert_close(grown.state_dict()[k], v, rtol=0, atol=0)
    # And the grown model learns: its new blocks get gradients (through their zero gates).
    grown.train()
    grown(x, t, **cond).square().mean().backward()
    assert grown.blocks[3].adaLN_modulation[-1].weight.grad.abs().sum() > 0


def test_mismatches_are_one_line_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = save_pretrained(
        _dit(2, hidden=16), _dit(2, hidden=16).config, tmp_path / "narrow.safetensors", kind="dit"
    )
    with pytest.raises(
        CheckpointError, match=r"does not fit the model: '.+' is \(\d+,.*\) there, \(\d+,.*\) here$"
    ):
        load_state_partial(_dit(2), path)
    deep = save_pretrained(_dit(3), _dit(3).config, tmp_path / "deep.safetensors", kind="dit")
    with pytest.raises(CheckpointError, match=r"it has no tensor 'blocks\.2\."):
        load_state_partial(_dit(2), deep)
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_state_partial(_dit(2), tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    bad.with_suffix(".yaml").write_text("{}\n")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_state_partial(_dit(2), bad)
    save_file({"x_embedder.weight": torch.zeros(32, 6)}, str(tmp_path / "part.safetensors"))
    (tmp_path / "part.yaml").write_text("{}\n")
    model = _dit(2)
    assert load_state_partial(model, tmp_path / "part.safetensors")[0] == 1
    assert model.x_embedder.weight.abs().sum() == 0
