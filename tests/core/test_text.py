"""The text-encoder interface: the packaged MiniLM offline, and local Hugging Face directories
(BERT-like, CLIP, T5) built from tiny random configs in the test."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from shared_core.errors import ExtradimError
from shared_core.text import TextEncoder, check_prompt, default_encoder_path

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder.load("minilm", max_length=12)


def test_minilm_tokens_mask_and_pooled(minilm: TextEncoder) -> None:
    emb = minilm.encode(["a red circle moving left", "a small blue square drifting upwards on black"])
    assert minilm.dim == 384
    assert emb.tokens.shape[0] == 2 and emb.tokens.shape[2] == 384
    assert emb.mask.dtype == torch.bool and emb.mask[0].sum() < emb.mask[1].sum()
    # Padding positions are zero and the pooled vector is the mean over real tokens.
    n0 = int(emb.mask[0].sum())
    assert torch.all(emb.tokens[0, n0:] == 0)
    torch.testing.assert_close(emb.pooled[0], emb.tokens[0, :n0].mean(0))
    # Different prompts give different embeddings; the model is deterministic.
    assert not torch.allclose(emb.pooled[0], emb.pooled[1])


def test_minilm_matches_direct_transformers_call(minilm: TextEncoder) -> None:
    """The states are the model's last_hidden_state, nothing else mixed in."""
    path = default_encoder_path()
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(path, local_files_only=True).eval()
    enc = tok(["a green triangle growing"], return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc).last_hidden_state[0]
    torch.testing.assert_close(minilm.encode(["a green triangle growing"]).tokens[0], ref)


def test_cache_reuses_embeddings(minilm: TextEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = minilm._encode_uncached

    def counting(prompts: list[str]) -> list:
        calls.append(len(prompts))
        return real(prompts)

    monkeypatch.setattr(minilm, "_encode_uncached", counting)
    a = minilm.encode(["a cyan ball sliding right", "a cyan ball sliding right", "a white box"])
    b = minilm.encode(["a white box", "a cyan ball sliding right"])
    assert calls == [2]  # two distinct prompts encoded once; the second call is all cache hits
    torch.testing.assert_close(b.tokens[1, : a.tokens.shape[1]], a.tokens[0])


def test_pad_to_and_truncation(minilm: TextEncoder) -> None:
    emb = minilm.encode(["a red ball"], pad_to=12)
    assert emb.tokens.shape[1] == 12 and emb.mask[0].sum() < 12
    long = "a red ball " + "that keeps on moving " * 20
    with pytest.warns(UserWarning, match="truncated to 12 tokens"):
        out = minilm.encode([long])
    assert out.mask.sum() == 12


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_prompts_are_errors(bad: str, minilm: TextEncoder) -> None:
    with pytest.raises(ExtradimError, match="empty prompt"):
        minilm.encode([bad])


def test_check_prompt_normalises_whitespace() -> None:
    assert check_prompt("  a   red\tball \n") == "a red ball"


def test_missing_directory_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ExtradimError, match="not found"):
        TextEncoder.load(tmp_path / "nope")


def _save_tiny(tmp_path: Path, config: object, name: str) -> Path:
    """A random model from ``config`` with MiniLM's (BERT) tokenizer, saved to a local directory."""
    out = tmp_path / name
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config)
    model.save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(default_encoder_path(), local_files_only=True).save_pretrained(
        out
    )
    return out


def _tiny_configs() -> dict[str, object]:
    small = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 30522}
    return {
        "bert": transformers.BertConfig(num_hidden_layers=1, **small),
        "clip": transformers.CLIPConfig(
            text_config={"num_hidden_layers": 1, **small, "max_position_embeddings": 64},
            vision_config={
                "hidden_size": 32,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "image_size": 8,
                "patch_size": 4,
            },
            projection_dim=16,
        ),
        "t5": transformers.T5Config(
            d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2, vocab_size=30522
        ),
    }


@pytest.mark.parametrize("kind", ["bert", "clip", "t5"])
def test_local_hugging_face_directories(kind: str, tmp_path: Path) -> None:
    path = _save_tiny(tmp_path, _tiny_configs()[kind], kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = TextEncoder.load(path, max_length=16)
    emb = enc.encode(["a red circle moving left", "a cube"])
    assert enc.dim == 32 and enc.name == str(path)
    assert emb.tokens.shape[0] == 2 and emb.tokens.shape[2] == 32 and torch.isfinite(emb.tokens).all()
    assert emb.mask[0].sum() > emb.mask[1].sum()
