"""The training loop's mechanics on a tiny MLP: accumulation, NaN guard, EMA, clipping, LR,
condition dropout, per-sample determinism, sharding, metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from shared_core.diffusion import LossOutput
from shared_core.errors import ConfigError
from shared_core.random import make_generator
from shared_core.schedules import get_schedule
from shared_core.train.distributed import ShardedBatchSampler, derive_seed, split_evenly
from shared_core.train.ema import EMA, ema_decay
from shared_core.train.loop import (
    DiffusionObjective,
    OptimConfig,
    RandomFlip,
    TrainingDiverged,
    lr_at,
)

from .helpers import MLP, GaussDataset, mlp_config, mlp_trainer


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_grad_accumulation_matches_one_big_batch(tmp_path: Path) -> None:
    runs = {}
    for accum in (1, 4):
        tr = mlp_trainer(
            tmp_path / f"a{accum}", mlp_config(steps=6, batch_size=8, grad_accum=accum, device="cpu")
        )
        tr.fit()
        runs[accum] = tr
    assert _max_diff(runs[1].model.state_dict(), runs[4].model.state_dict()) < 1e-6
    assert _max_diff(runs[1].ema.state_dict(), runs[4].ema.state_dict()) < 1e-6
    assert runs[1].model.state_dict()["net.0.weight"].ne(MLP().state_dict()["net.0.weight"]).any()


def test_per_sample_randomness_is_independent_of_batching() -> None:
    """Sample i's loss depends only on its own generator: the basis of exact DDP and resume."""
    obj = DiffusionObjective(
        get_schedule("linear", num_steps=100),
        cond_keys=("y",),
        null_cond={"y": torch.tensor(2)},
        cond_drop_prob=0.5,
    )
    torch.manual_seed(0)
    net = MLP()
    ds = GaussDataset()
    batch = {k: torch.stack([ds[i][k] for i in range(8)]) for k in ("x", "y")}

    def gens(ids):
        return [make_generator(derive_seed(7, i)) for i in ids]

    whole = obj(net, batch, gens(range(8))).loss
    halves = torch.cat(
        [
            obj(net, {k: v[s] for k, v in batch.items()}, gens(range(8))[s]).loss
            for s in (slice(0, 4), slice(4, 8))
        ]
    )
    torch.testing.assert_close(whole, halves, rtol=1e-6, atol=1e-7)


class _NaNOnSteps:
    """Wraps an objective; poisons the loss on chosen steps of a trainer."""

    def __init__(self, inner, steps):
        self.inner, self.steps, self.trainer = inner, set(steps), None

    def __call__(self, net, batch, gens):
        out = self.inner(net, batch, gens)
        if self.trainer.step in self.steps:
            return LossOutput(out.loss * float("nan"), out.mse, out.t)
        return out


def test_nan_guard_skips_counts_and_stops(tmp_path: Path) -> None:
    base = mlp_trainer(tmp_path / "base").objective
    obj = _NaNOnSteps(base, steps={2, 3})
    tr = mlp_trainer(tmp_path / "run", mlp_config(steps=6, max_nonfinite_steps=2), objective=obj)
    obj.trainer = tr
    tr.train_step()
    tr.train_step()
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in tr.ema.state_dict().items()}
    s = tr.train_step()  # step 2: poisoned
    assert s.skipped and tr.nonfinite_total == 1 and tr.step == 3
    assert _max_diff(before, tr.model.state_dict()) == 0.0  # no update
    assert _max_diff(ema_before, tr.ema.state_dict()) == 0.0
    assert all(p.grad is None for p in tr.model.parameters())  # poisoned gradients dropped
    tr.train_step()  # step 3: poisoned again
    assert tr.nonfinite_consecutive == 2
    assert not tr.train_step().skipped  # recovers
    assert tr.nonfinite_consecutive == 0 and tr.nonfinite_total == 2

    obj2 = _NaNOnSteps(base, steps=range(100))
    tr2 = mlp_trainer(tmp_path / "run2", mlp_config(steps=6, max_nonfinite_steps=2), objective=obj2)
    obj2.trainer = tr2
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        tr2.fit()


def test_ema_warmup_and_update() -> None:
    assert ema_decay(0, 0.999) == pytest.approx(0.1)
    assert ema_decay(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay(10**6, 0.999) == 0.999
    assert ema_decay(0, 0.999, warmup=False) == 0.999
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.999, warmup=True, start_step=1)
    init = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=0)  # before start_step: a plain copy
    torch.testing.assert_close(ema.module.weight, model.weight)
    assert ema.num_updates == 0
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=1)  # first real update: decay 0.1
    torch.testing.assert_close(ema.module.weight, 0.1 * (init + 1) + 0.9 * (init + 2))
    assert ema.num_updates == 1 and not ema.module.weight.requires_grad


def test_gradient_clipping(tmp_path: Path) -> None:
    clip = 1e-3
    tr = mlp_trainer(tmp_path / "run", mlp_config(optim={"grad_clip": clip}))
    seen = []
    original = tr.optimizer.step

    def spy(*a, **k):
        seen.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in tr.params)))
        return original(*a, **k)

    tr.optimizer.step = spy
    s = tr.train_step()
    assert s.grad_norm > clip  # reported norm is the pre-clip one
    assert seen[0] == pytest.approx(clip, rel=1e-3)


def test_lr_schedule() -> None:
    cfg = OptimConfig(lr=1.0, warmup_steps=4, min_lr=0.1)
    assert [lr_at(s, cfg, 14) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, cfg, 14) == pytest.approx(1.0)
    assert lr_at(9, cfg, 14) == pytest.approx(0.55)  # half way through the cosine
    assert lr_at(14, cfg, 14) == pytest.approx(0.1)
    assert lr_at(3, OptimConfig(lr=0.5, schedule="constant"), 10) == 0.5


def test_condition_dropout_uses_null_condition() -> None:
    seen = []

    def net(x, t, y):
        seen.append(y.clone())
        return torch.zeros_like(x)

    ds = GaussDataset()
    batch = {k: torch.stack([ds[i][k] for i in range(64)]) for k in ("x", "y")}
    gens = [make_generator(i) for i in range(64)]
    for p, check in ((0.0, lambda y: torch.equal(y, batch["y"])), (1.0, lambda y: (y == 2).all())):
        obj = DiffusionObjective(
            get_schedule("linear", num_steps=100),
            cond_keys=("y",),
            null_cond={"y": torch.tensor(2)},
            cond_drop_prob=p,
        )
        obj(net, batch, gens)
        assert check(seen[-1])
    obj = DiffusionObjective(
        get_schedule("linear", num_steps=100),
        cond_keys=("y",),
        null_cond={"y": torch.tensor(2)},
        cond_drop_prob=0.5,
    )
    obj(net, batch, [make_generator(i) for i in range(64)])
    dropped = (seen[-1] == 2).float().mean()
    assert 0.25 < dropped < 0.75


def test_random_flip_is_a_function_of_the_generator() -> None:
    x = torch.arange(12.0).reshape(1, 3, 4)
    flip = RandomFlip(dims=(-1,), p=0.5)
    outs = [flip({"x": x, "y": torch.tensor(1)}, make_generator(s))["x"] for s in range(20)]
    assert any(torch.equal(o, x) for o in outs) and any(torch.equal(o, x.flip(-1)) for o in outs)
    again = [flip({"x": x}, make_generator(s))["x"] for s in range(20)]
    assert all(torch.equal(a, b) for a, b in zip(outs, again))


def test_sharded_sampler() -> None:
    finite = ShardedBatchSampler(size=10, global_batch=4, seed=3)
    seen = [i for step in range(5) for i in finite.global_indices(step)]  # two epochs of 10
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert seen[:10] != seen[10:]  # reshuffled each epoch
    shards = [finite.shard(3, r, 2) for r in range(2)]
    assert shards[0][0] + shards[1][0] == finite.global_indices(3)
    assert list(shards[1][1]) == [2, 3]
    assert ShardedBatchSampler(None, 4).global_indices(2) == [8, 9, 10, 11]
    assert [len(split_evenly(10, 3, i)) for i in range(3)] == [4, 3, 3]
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3) != derive_seed(1, 2, 4)
    assert derive_seed(0, 0) == 5320122090117835074  # golden: a change here breaks resuming old runs


def test_metrics_jsonl_and_resume_truncation(tmp_path: Path) -> None:
    tr = mlp_trainer(tmp_path / "run", mlp_config(steps=10, checkpoint={"every": 5}))
    tr.fit(max_steps=7)  # stops at 7 with a checkpoint at 5 and 7
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 8))
    assert {"loss", "lr", "grad_norm", "it_per_s", "samples_per_s", "nonfinite_skipped"} <= lines[0].keys()
    # Simulate a kill after step 7's log but with only step 5's checkpoint surviving.
    import shutil

    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_00000007")
    tr2 = mlp_trainer(tmp_path / "run", mlp_config(steps=10, checkpoint={"every": 5}))
    tr2.fit(resume=True)
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))


def test_loss_aware_timesteps_state_is_checkpointed(tmp_path: Path) -> None:
    def obj():
        return DiffusionObjective(
            get_schedule("linear", num_steps=10), timesteps="loss_aware", cond_keys=("y",)
        )

    tr = mlp_trainer(tmp_path / "run", mlp_config(steps=4, checkpoint={"every": 4}), objective=obj())
    tr.fit()
    assert int(tr.objective.t_sampler.counts.sum()) == 4 * 8
    tr2 = mlp_trainer(tmp_path / "other", objective=obj())
    tr2.load_checkpoint(tr.checkpoint_root / "step_00000004")
    assert torch.equal(tr2.objective.t_sampler.losses, tr.objective.t_sampler.losses)


def test_batch_must_split_over_accumulation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not divisible by grad_accum"):
        mlp_config(batch_size=6, grad_accum=4)


def test_fp16_on_cpu_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        mlp_trainer(tmp_path / "run", mlp_config(precision="fp16", device="cpu"))


def test_tensorboard_optional(tmp_path: Path) -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        tr = mlp_trainer(tmp_path / "run", mlp_config(log={"tensorboard": True}))
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            tr.fit()
    else:
        tr = mlp_trainer(tmp_path / "run", mlp_config(steps=2, log={"tensorboard": True}))
        tr.fit()
        assert any((tmp_path / "run" / "tensorboard").iterdir())
