"""A diffusers Stable Diffusion folder as the score-distillation prior: a tiny random pipeline built
from configs in the test (no download), saved, loaded through ``extradim dream``'s prior loader."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")


def _tiny_tokenizer(folder: Path):
    chars = list(string.ascii_lowercase + string.digits + ",.' ")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16
    )


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("sd")
    tok_dir = root / "tok"
    tok_dir.mkdir()
    tokenizer = _tiny_tokenizer(tok_dir)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))  # fmt: skip
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    )  # fmt: skip
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )  # fmt: skip
    scheduler = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


def test_sd_prior_loads_and_gives_latent_sds(sd_folder: Path):
    from shared_core.distill import sds_loss
    from threed.dream_cli import load_prior

    prior = load_prior(str(sd_folder))
    assert prior.size == prior.input_size == 16 and prior.name.startswith("stable-diffusion")
    x = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    z = prior.latents(x)
    assert z.shape == (2, 4, 8, 8)
    cams = torch.tensor([[0.0, 10.0], [180.0, 10.0]])
    den = prior.denoiser(prior.encode("a red torus"), cams, 7.5)
    out = sds_loss(den, z, torch.tensor([1.0, 2.0]), torch.randn(2, 4, 8, 8))
    out.loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # through the VAE encoder to the render
    assert not any(p.requires_grad for p in prior.pipe.unet.parameters())
    # the view suffix changes the condition: front and back views get different prompts
    assert set(prior._cache) >= {"a red torus, front view", "a red torus, back view", ""}


def test_sd_prior_drives_the_dream_loop(sd_folder: Path):
    from threed.dream import DreamConfig, dream
    from threed.dream_cli import load_prior

    cfg = DreamConfig(
        steps=2,
        albedo_steps=0,
        init="blob",
        nerf={"grid_size": 12, "samples_per_ray": 16, "occupancy_size": 6},
    )
    result = dream(load_prior(str(sd_folder)), "a red torus", cfg, seed=0, progress=False)
    assert result.steps == 2
    assert result.field.density_grid.abs().sum() > 0  # the prior moved the field


def test_not_a_pipeline_folder(tmp_path: Path):
    from shared_core.errors import CheckpointError
    from threed.sd_prior import StableDiffusionPrior

    with pytest.raises(CheckpointError, match="model_index"):
        StableDiffusionPrior.load(tmp_path)
