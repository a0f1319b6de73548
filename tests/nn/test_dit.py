"""Behaviour of the DiT backbone, its embeddings and patchify, and the diffusers conversion."""

from __future__ import annotations

import math

import pytest
import torch

from shared_core.nn import (
    DIT_PRESETS,
    DiT,
    DiTConfig,
    LabelEmbedder,
    build_dit,
    dit_config,
    from_diffusers_state_dict,
    patchify,
    sincos_pos_embed,
    timestep_embedding,
    to_diffusers_state_dict,
    unpatchify,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_config(**overrides) -> DiTConfig:
    base = {"hidden_size": 32, "depth": 2, "num_heads": 2, "in_channels": 3}
    return DiTConfig(**(base | overrides))


def randomized(model: DiT, std: float = 0.1) -> DiT:
    """Overwrite the zero init so every path contributes (adaLN-Zero would hide bugs)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()


# ----------------------------------------------------------------------------------------------------
#                                       patchify / embeddings
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grid", "patch"), [((12,), (4,)), ((6, 8), (2, 2)), ((6, 8), (3, 1)), ((2, 6, 4), (1, 2, 2))]
)
def test_patchify_round_trip(grid: tuple[int, ...], patch: tuple[int, ...]) -> None:
    x = torch.randn(2, 3, *grid)
    tokens, token_grid = patchify(x, patch)
    assert token_grid == tuple(g // p for g, p in zip(grid, patch))
    assert tokens.shape == (2, math.prod(token_grid), 3 * math.prod(patch))
    torch.testing.assert_close(unpatchify(tokens, token_grid, patch, 3), x, atol=0, rtol=0)


def test_patchify_token_layout_is_row_major_channel_last() -> None:
    x = torch.randn(1, 3, 4, 6)
    tokens, _ = patchify(x, (2, 3))
    i, j = 1, 1  # patch row 1, column 1 -> token 1 * (6 // 3) + 1
    expected = x[0, :, 2:4, 3:6].permute(1, 2, 0).reshape(-1)  # (p q c)
    torch.testing.assert_close(tokens[0, i * 2 + j], expected, atol=0, rtol=0)


def test_patchify_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.randn(1, 3, 5, 4), (2, 2))
    with pytest.raises(ValueError, match="rank"):
        patchify(torch.randn(1, 3, 4, 4), (2,))


def test_sincos_2d_is_dit_convention() -> None:
    """First half encodes the column (last axis), second half the row, as DiT's meshgrid(w, h)."""
    H, W, D = 3, 5, 32
    pe = sincos_pos_embed(D, (H, W)).view(H, W, D)
    assert torch.allclose(pe[:, :, : D // 2], pe[:1, :, : D // 2].expand(H, W, D // 2))  # column only
    assert torch.allclose(pe[:, :, D // 2 :], pe[:, :1, D // 2 :].expand(H, W, D // 2))  # row only
    omega = 1.0 / 10000 ** (torch.arange(D // 4, dtype=torch.float64) / (D / 4))
    col = 4 * omega
    torch.testing.assert_close(pe[0, 4, : D // 2].double(), torch.cat([col.sin(), col.cos()]))


def test_sincos_2d_matches_diffusers() -> None:
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    ref = embeddings.get_2d_sincos_pos_embed(64, 8, base_size=8, output_type="pt")
    torch.testing.assert_close(sincos_pos_embed(64, (8, 8)), ref.float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("dim", "grid"), [(16, (7,)), (24, (2, 3, 4)), (128, (2, 3, 4)), (33, (3, 2))])
def test_sincos_ranks_and_odd_sizes(dim: int, grid: tuple[int, ...]) -> None:
    pe = sincos_pos_embed(dim, grid)
    assert pe.shape == (math.prod(grid), dim) and torch.isfinite(pe).all()
    assert len({tuple(r) for r in pe.tolist()}) == math.prod(grid)  # every position distinct


def test_timestep_embedding_float_and_diffusers_shift() -> None:
    t = torch.tensor([0.0, 0.5, 999.25])
    emb = timestep_embedding(t, 256)
    assert emb.shape == (3, 256) and not torch.allclose(emb[0], emb[1])
    torch.testing.assert_close(emb[0], torch.cat([torch.ones(128), torch.zeros(128)]))  # [cos, sin]
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    ref = embeddings.get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=1)
    torch.testing.assert_close(timestep_embedding(t, 256, freq_shift=1.0), ref)


def test_label_embedder_null_class_and_drop() -> None:
    emb = LabelEmbedder(10, 8, dropout_prob=0.5)
    y = torch.tensor([1, 2, 3])
    assert emb.null_class == 10 and emb.embedding_table.num_embeddings == 11
    dropped = emb(y, force_drop=torch.tensor([True, False, True]))
    torch.testing.assert_close(dropped[0], emb.embedding_table.weight[10])
    torch.testing.assert_close(dropped[1], emb.embedding_table.weight[2])
    emb.eval()
    torch.testing.assert_close(emb(y), emb.embedding_table.weight[y])  # no dropout in eval


# ----------------------------------------------------------------------------------------------------
#                                              The model
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "grid", "layout", "axes"),
    [
        ((4,), (16,), "joint", None),
        ((2, 2), (8, 6), "joint", None),
        ((1, 2, 2), (3, 4, 4), (("h", "w"), ("t",)), ("t", "h", "w")),
        ((2, 2, 2), (4, 4, 4), ((0,), (1, 2)), None),
    ],
)
@pytest.mark.parametrize("learn_sigma", [False, True])
def test_grid_shapes(patch, grid, layout, axes, learn_sigma: bool) -> None:
    cfg = tiny_config(patch_size=patch, attn_layout=layout, grid_axes=axes, learn_sigma=learn_sigma)
    model = randomized(DiT(cfg))
    x = torch.randn(2, 3, *grid)
    out = model(x, torch.tensor([10, 500]))
    assert out.shape == (2, 3 * (1 + learn_sigma), *grid) and torch.isfinite(out).all()


def test_token_set_shape_and_permutation_equivariance() -> None:
    model = randomized(DiT(tiny_config(patch_size=None, learn_sigma=True, num_classes=5)))
    x, t, y = torch.randn(2, 20, 3), torch.tensor([3.5, 700.0]), torch.tensor([0, 4])
    out = model(x, t, y)
    assert out.shape == (2, 20, 6)
    perm = torch.randperm(20)
    torch.testing.assert_close(model(x[:, perm], t, y), out[:, perm], atol=1e-5, rtol=1e-5)


def test_target_channels_predict_only_the_leading_input_channels() -> None:
    grid = randomized(DiT(tiny_config(in_channels=5, target_channels=3, learn_sigma=True)))
    assert grid(torch.randn(2, 5, 8, 6), torch.tensor([1, 2])).shape == (2, 6, 8, 6)
    tokens = randomized(DiT(tiny_config(patch_size=None, in_channels=5, target_channels=3)))
    assert tokens(torch.randn(2, 7, 5), torch.tensor([1, 2])).shape == (2, 7, 3)
    with pytest.raises(ValueError, match="target_channels"):
        DiTConfig(in_channels=3, target_channels=4)


def test_factorised_equals_joint_with_one_group_of_all_axes() -> None:
    joint = randomized(DiT(tiny_config(patch_size=(4,))))
    single_axis = DiT(tiny_config(patch_size=(4,), attn_layout=((0,),)))
    single_axis.load_state_dict(joint.state_dict())
    x, t = torch.randn(2, 3, 32), torch.tensor([1, 2])
    torch.testing.assert_close(single_axis.eval()(x, t), joint(x, t), atol=1e-6, rtol=1e-6)

    joint2d = randomized(DiT(tiny_config()))
    hw = DiT(tiny_config(attn_layout=(("h", "w"),), grid_axes=("h", "w")))
    hw.load_state_dict(joint2d.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(hw.eval()(x, t), joint2d(x, t), atol=1e-6, rtol=1e-6)


def test_factorised_differs_from_joint_on_a_real_split() -> None:
    joint = randomized(DiT(tiny_config(patch_size=(1, 2, 2))))
    fact = DiT(tiny_config(patch_size=(1, 2, 2), attn_layout=((1, 2), (0,))))
    fact.load_state_dict(joint.state_dict())
    x, t = torch.randn(1, 3, 3, 4, 4), torch.tensor([5])
    assert not torch.allclose(fact.eval()(x, t), joint(x, t), atol=1e-4)


def test_zero_init_outputs_zero_and_head_learns() -> None:
    model = DiT(tiny_config(num_classes=4, learn_sigma=True, context_dim=8, pooled_dim=6))
    x = torch.randn(2, 3, 8, 8)
    kw = {"y": torch.tensor([0, 4]), "context": torch.randn(2, 5, 8), "pooled": torch.randn(2, 6)}
    out = model(x, torch.tensor([1.0, 2.0]), **kw)
    assert out.abs().max() == 0
    (out - x.repeat(1, 2, 1, 1)).square().mean().backward()
    assert model.final_layer.linear.weight.grad.abs().sum() > 0


def test_gradients_reach_every_parameter() -> None:
    cfg = tiny_config(
        num_classes=4, context_dim=8, pooled_dim=6, patch_size=(1, 2, 2), attn_layout=((1, 2), (0,))
    )
    model = randomized(DiT(cfg)).train()
    cond = {"y": torch.tensor([1, 2]), "context": torch.randn(2, 5, 8), "pooled": torch.randn(2, 6)}
    out = model(torch.randn(2, 3, 2, 4, 4), torch.rand(2) * 1000, **cond)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_masked_context_in_model_ignores_padding() -> None:
    model = randomized(DiT(tiny_config(context_dim=8)))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 9])
    ctx = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    out = model(x, t, context=ctx, context_mask=mask)
    noisy_pad = torch.where(mask[..., None], ctx, torch.randn_like(ctx))
    torch.testing.assert_close(model(x, t, context=noisy_pad, context_mask=mask), out, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(model(x, t, context=ctx * 2, context_mask=mask), out, atol=1e-4)
    # No context at all == a context that is entirely padding.
    empty = torch.zeros(2, 6, dtype=torch.bool)
    torch.testing.assert_close(model(x, t), model(x, t, context=ctx, context_mask=empty), atol=1e-6, rtol=0)


def test_label_dropout_in_training_uses_null_class() -> None:
    model = randomized(DiT(tiny_config(num_classes=4, class_dropout_prob=1.0)))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 9])
    null = model(x, t, y=torch.full((2,), 4))
    model.train()
    torch.testing.assert_close(model(x, t, y=torch.tensor([0, 1])), null)


def test_conditions_are_checked() -> None:
    model = DiT(tiny_config(num_classes=4))
    with pytest.raises(ValueError, match="y is required"):
        model(torch.randn(1, 3, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="x must be"):
        model(torch.randn(1, 3, 8), torch.tensor([1]), y=torch.tensor([1]))
    with pytest.raises(ValueError, match="no cross-attention"):
        model(torch.randn(1, 3, 8, 8), torch.tensor([1]), y=torch.tensor([1]), context=torch.randn(1, 2, 4))


def test_config_errors_are_loud() -> None:
    with pytest.raises(ValueError, match="valid: DiT-S/2"):
        dit_config("DiT-M/2")
    with pytest.raises(ValueError, match="token set"):
        tiny_config(patch_size=None, attn_layout=((0,),))
    with pytest.raises(ValueError, match="unknown grid axis 'f'"):
        tiny_config(patch_size=(1, 2, 2), grid_axes=("t", "h", "w"), attn_layout=(("f",),))
    with pytest.raises(ValueError, match="out of range"):
        tiny_config(attn_layout=((2,),))
    assert tiny_config(patch_size=[1, 2, 2], attn_layout=[[1, 2], [0]]).attn_layout == ((1, 2), (0,))


def _published_dit_params(depth: int, d: int, p: int, c: int = 4, classes: int = 1000, size: int = 32) -> int:
    """Parameter count of the published DiT (models.py, learn_sigma, incl. its pos_embed Parameter)."""
    out = 2 * c
    patch_embed = c * p * p * d + d
    pos_embed = (size // p) ** 2 * d
    t_embed = 256 * d + d + d * d + d
    y_embed = (classes + 1) * d
    block = (6 * d * d + 6 * d) + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    final = (2 * d * d + 2 * d) + (p * p * out * d + p * p * out)
    return patch_embed + pos_embed + t_embed + y_embed + depth * block + final


def test_param_counts_match_published_dit() -> None:
    assert _published_dit_params(28, 1152, 2) == 675_129_632  # DiT-XL/2 as reported by DiT's train.py
    published_millions = {"DiT-S/2": 33, "DiT-B/2": 130, "DiT-L/2": 458, "DiT-XL/2": 675}  # paper, Table 1
    sizes = {"S": (12, 384), "B": (12, 768), "L": (24, 1024), "XL": (28, 1152)}
    for name in DIT_PRESETS:
        if not name.startswith("DiT-"):
            continue
        with torch.device("meta"):
            model = build_dit(name)
        ours = sum(p.numel() for p in model.parameters())
        size, patch = name[4:].split("/")
        reference = _published_dit_params(*sizes[size], int(patch))
        assert abs(ours - reference) / reference < 0.01, (name, ours, reference)
        if name in published_millions:
            assert round(ours / 1e6) == published_millions[name], (name, ours)
    assert {"tiny", "mini"} <= set(DIT_PRESETS)


# ----------------------------------------------------------------------------------------------------
#                                        diffusers conversion
# ----------------------------------------------------------------------------------------------------


def _diffusers_dit(tied: bool):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_zero",
    ).eval()
    if tied:  # what checkpoints converted from the original DiT look like
        src = ref.transformer_blocks[0].norm1.emb.state_dict()
        for block in ref.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(src)
    return ref


@pytest.mark.parametrize("tied", [False, True])
def test_diffusers_parity_and_round_trip(tied: bool) -> None:
    ref = _diffusers_dit(tied)
    cfg, sd = from_diffusers_state_dict(ref.state_dict(), ref.config)
    assert cfg.cond_embed_per_block is not tied and cfg.learn_sigma
    ours = DiT(cfg).eval()
    ours.load_state_dict(sd, strict=True)

    x = torch.randn(3, 4, 8, 8)
    t = torch.tensor([0.0, 417.0, 999.0])
    y = torch.tensor([0, 531, 1000])  # 1000 = the null class
    with torch.no_grad():
        expected = ref(x, timestep=t, class_labels=y).sample
        got = ours(x, t, y)
    assert (got - expected).abs().max() <= 1e-5

    back, kwargs = to_diffusers_state_dict(ours.state_dict(), cfg)
    original = ref.state_dict()
    assert back.keys() == original.keys()
    for k, v in original.items():
        assert torch.equal(back[k], v), k
    rebuilt = type(ref)(**kwargs, sample_size=8)
    rebuilt.load_state_dict(back, strict=True)


def test_diffusers_export_rejects_what_it_cannot_hold() -> None:
    with pytest.raises(ValueError, match="2-D grid"):
        to_diffusers_state_dict({}, tiny_config(patch_size=(1, 2, 2), num_classes=3, timestep_freq_shift=1.0))
    with pytest.raises(ValueError, match="timestep_freq_shift"):
        to_diffusers_state_dict({}, tiny_config(num_classes=3))
