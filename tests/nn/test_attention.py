"""Behaviour of the one attention module: folding, masking, backends."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from shared_core.nn import attention as attention_mod
from shared_core.nn.attention import Attention, fold_axes, unfold_axes

XFORMERS_INSTALLED = importlib.util.find_spec("xformers") is not None


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _reference_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Textbook softmax(QK^T / sqrt(d)) V with the module's own weights, for (B, N, D) inputs."""
    b, n, d = x.shape
    q, k, v = attn.qkv(x).view(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    w = (q @ k.transpose(-1, -2) / attn.head_dim**0.5).softmax(-1)
    return attn.proj((w @ v).transpose(1, 2).reshape(b, n, d))


def test_joint_matches_textbook_attention() -> None:
    attn = Attention(32, 4).eval()
    x = torch.randn(2, 10, 32)
    torch.testing.assert_close(attn(x), _reference_attention(attn, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("axes", [(0,), (1, 2), (0, 2), (2,)])
def test_fold_unfold_round_trip(axes: tuple[int, ...]) -> None:
    grid = (3, 4, 5)
    x = torch.randn(2, 60, 8)
    folded = fold_axes(x, grid, axes)
    attended = 1
    for a in axes:
        attended *= grid[a]
    assert folded.shape == (2 * 60 // attended, attended, 8)
    torch.testing.assert_close(unfold_axes(folded, grid, axes), x, atol=0, rtol=0)


@pytest.mark.parametrize("axes", [(0,), (1, 2), (0, 2)])
def test_fold_equals_manual_per_slice(axes: tuple[int, ...]) -> None:
    """Attending over some axes == running joint attention on every slice of the other axes."""
    T, H, W, D = 3, 4, 5, 16
    attn = Attention(D, 2).eval()
    x = torch.randn(2, T * H * W, D)
    out = attn(x, grid_shape=(T, H, W), axes=axes).view(2, T, H, W, D)

    xg = x.view(2, T, H, W, D)
    others = [a for a in range(3) if a not in axes]
    expected = torch.empty_like(xg)
    for idx in torch.cartesian_prod(*[torch.arange((T, H, W)[a]) for a in others]).reshape(-1, len(others)):
        index: list[slice | int] = [slice(None)] * 4  # over (B, T, H, W)
        for a, i in zip(others, idx.tolist()):
            index[1 + a] = i
        index_t = tuple(index)
        seq = xg[index_t].reshape(2, -1, D)  # (B, attended tokens, D), row-major over kept axes
        expected[index_t] = _reference_attention(attn, seq).view(xg[index_t].shape)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_all_axes_is_joint() -> None:
    attn = Attention(16, 2).eval()
    x = torch.randn(2, 12, 16)
    torch.testing.assert_close(attn(x, grid_shape=(3, 4), axes=(1, 0)), attn(x), atol=0, rtol=0)


def test_masked_cross_attention_ignores_padding() -> None:
    attn = Attention(16, 2, context_dim=12).eval()
    x, ctx = torch.randn(2, 7, 16), torch.randn(2, 6, 12)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    out = attn(x, context=ctx, context_mask=mask)

    changed_pad = torch.where(mask[..., None], ctx, torch.randn_like(ctx) * 100)
    torch.testing.assert_close(attn(x, context=changed_pad, context_mask=mask), out, atol=1e-6, rtol=0)
    # ...but the real tokens do matter, and truncating the padding away gives the same answer.
    assert not torch.allclose(attn(x, context=ctx + 1, context_mask=mask), out)
    torch.testing.assert_close(attn(x[1:], context=ctx[1:, :2]), out[1:], atol=1e-6, rtol=1e-6)


def test_fully_masked_context_gives_zero_not_nan() -> None:
    attn = Attention(16, 2, context_dim=12).eval()
    mask = torch.tensor([[True, False, True], [False, False, False]])
    out = attn(torch.randn(2, 5, 16), context=torch.randn(2, 3, 12), context_mask=mask)
    assert torch.isfinite(out).all()
    assert out[1].abs().max() == 0 and out[0].abs().max() > 0


def test_bad_arguments_are_loud() -> None:
    with pytest.raises(ValueError, match="valid: auto, sdpa, xformers"):
        Attention(16, 2, backend="flash")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="divisible"):
        Attention(15, 2)
    with pytest.raises(ValueError, match="grid_shape"):
        Attention(16, 2)(torch.randn(1, 4, 16), axes=(0,))
    with pytest.raises(ValueError, match="bool"):
        Attention(16, 2, context_dim=4)(torch.randn(1, 3, 16), torch.randn(1, 2, 4), torch.ones(1, 2))


@pytest.mark.skipif(XFORMERS_INSTALLED, reason="checks the error raised when xformers is missing")
def test_xformers_missing_raises() -> None:
    with pytest.raises(ValueError, match="xformers is not installed"):
        Attention(16, 2, backend="xformers")


def test_xformers_on_cpu_raises_and_auto_uses_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attention_mod, "_xformers_installed", lambda: True)  # pretend it is installed
    x = torch.randn(1, 4, 16)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        Attention(16, 2, backend="xformers")(x)
    auto = Attention(16, 2, backend="auto")
    sdpa = Attention(16, 2, backend="sdpa")
    sdpa.load_state_dict(auto.state_dict())
    torch.testing.assert_close(auto(x), sdpa(x), atol=0, rtol=0)  # no xformers import on CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    attn = Attention(32, 4, context_dim=8).eval()
    x, ctx = torch.randn(2, 9, 32), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    ref = attn(x, ctx, mask)
    attn_cuda = attn.cuda()
    out = attn_cuda(x.cuda(), ctx.cuda(), mask.cuda())  # "auto": xformers if installed, else sdpa
    torch.testing.assert_close(out.cpu(), ref, atol=1e-4, rtol=1e-4)


def test_gradients_flow_through_folded_attention() -> None:
    attn = Attention(16, 2)
    x = torch.randn(2, 24, 16, requires_grad=True)
    attn(x, grid_shape=(2, 3, 4), axes=(0,)).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attn.parameters())


def test_sdpa_semantics_of_bool_mask() -> None:
    """Guard the convention we rely on: in SDPA a True mask entry means 'take part'."""
    q = k = v = torch.randn(1, 1, 2, 4)
    mask = torch.tensor([[True, False], [True, False]])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out[0, 0], v[0, 0, :1].expand(2, 4))


def test_auto_falls_back_to_sdpa_where_xformers_has_no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen on an H200: a PyPI xformers built for another torch imports but dispatches to nothing."""
    import shared_core.nn.attention as attention

    calls = []

    def no_kernel(q, k, v, key_mask):
        calls.append(q.shape)
        raise NotImplementedError(
            "No operator found for `memory_efficient_attention_forward` with inputs:\n ..."
        )

    monkeypatch.setattr(attention, "_XFORMERS_UNSUPPORTED", set())
    monkeypatch.setattr(Attention, "_resolve_backend", lambda self, x: "xformers")
    monkeypatch.setattr(Attention, "_attend_xformers", staticmethod(no_kernel))
    torch.manual_seed(0)
    auto = Attention(16, 2, context_dim=8)
    x, ctx, mask = torch.randn(2, 5, 16), torch.randn(2, 3, 8), torch.tensor([[1, 1, 0], [1, 0, 0]]).bool()
    with pytest.warns(RuntimeWarning, match="No operator found.*uses sdpa"):
        out = auto(x, ctx, mask)
    again = auto(x, ctx, mask)  # remembered: no second try, no second warning
    assert len(calls) == 1
    sdpa = Attention(16, 2, context_dim=8, backend="sdpa")
    sdpa.load_state_dict(auto.state_dict())
    torch.testing.assert_close(out, sdpa(x, ctx, mask), atol=0, rtol=0)
    torch.testing.assert_close(again, out, atol=0, rtol=0)

    auto.backend = "xformers"  # asked for by name: an error, not a fallback
    with pytest.raises(RuntimeError, match=r"backend .xformers. has no kernel for torch\.float32"):
        auto(x, ctx, mask)
