"""Typed YAML configs: strict keys, type checks, overrides, round trips."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from shared_core.config import (
    apply_overrides,
    from_dict,
    from_yaml,
    override,
    parse_override,
    to_dict,
    to_yaml,
)
from shared_core.errors import ConfigError
from shared_core.train.loop import RunConfig
from shared_core.train.toy_modality import Toy2DConfig

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    name: str = "adam"
    flag: bool = False


@dataclass(frozen=True)
class Outer:
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    maybe: int | None = None
    sizes: tuple[int, ...] = (1, 2)
    pair: tuple[float, float] = (0.9, 0.99)
    names: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError("steps must be >= 0")


def test_defaults_and_nested() -> None:
    cfg = from_dict(Outer, {"inner": {"lr": 2}, "sizes": [3, 4, 5]})
    assert cfg.inner.lr == 2.0 and isinstance(cfg.inner.lr, float)  # int widened to float
    assert cfg.sizes == (3, 4, 5)  # lists become tuples for tuple fields
    assert cfg.steps == 10


def test_unknown_key_names_path_and_valid_keys() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key 'inner\.lrr' \(did you mean 'lr'\?\).*lr, name, flag"
    ):
        from_dict(Outer, {"inner": {"lrr": 1.0}})
    with pytest.raises(ConfigError, match=r"unknown key 'stepz'.*top level"):
        from_dict(Outer, {"stepz": 1})


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"steps": "ten"}, r"steps: expected int, got str 'ten'"),
        ({"steps": 1.5}, r"steps: expected int, got float"),
        ({"steps": True}, r"steps: expected int, got bool"),  # bool is not an int here
        ({"inner": {"flag": 1}}, r"inner\.flag: expected bool"),
        ({"inner": {"lr": "fast"}}, r"inner\.lr: expected float"),
        ({"mode": "c"}, r"mode: 'c' is not one of 'a', 'b'"),
        ({"sizes": [1, "x"]}, r"sizes\[1\]: expected int"),
        ({"pair": [1.0]}, r"pair: expected 2 items"),
        ({"maybe": "x"}, r"maybe: expected int"),
        ({"inner": 3}, r"inner: expected a mapping"),
        ({"extra": {"a": "b"}}, r"extra\.a: expected float"),
        ({"steps": -1}, r"steps must be >= 0"),  # __post_init__ checks become ConfigErrors
    ],
)
def test_type_errors(data: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        from_dict(Outer, data)


def test_optional_and_containers() -> None:
    cfg = from_dict(Outer, {"maybe": None, "names": ["x"], "extra": {"a": 1}})
    assert cfg.maybe is None and cfg.names == ["x"] and cfg.extra == {"a": 1.0}


def test_overrides_parse_yaml_values() -> None:
    assert parse_override("a.b=3e-4") == (["a", "b"], 3e-4)  # YAML 1.2 float, not the string "3e-4"
    assert parse_override("x=[1, 2]") == (["x"], [1, 2])
    assert parse_override("x=null") == (["x"], None)
    assert parse_override("x=hello") == (["x"], "hello")
    with pytest.raises(ConfigError, match=r"dotted\.key=value"):
        parse_override("no_equals")
    with pytest.raises(ConfigError, match=r"dotted\.key=value"):
        parse_override("bad key=1")
    data = apply_overrides({"inner": {"lr": 1.0}}, ["inner.lr=0.5", "inner.name=sgd", "steps=3"])
    assert data == {"inner": {"lr": 0.5, "name": "sgd"}, "steps": 3}
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"steps": 3}, ["steps.x=1"])


def test_override_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'inner\.nope'"):
        override(Outer(), ["inner.nope=1"])
    assert override(Outer(), ["inner.flag=true"]).inner.flag is True


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = from_dict(Outer, {"sizes": [7], "inner": {"lr": 1e-5}, "extra": {"k": 0.5}})
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg))
    assert from_yaml(Outer, path) == cfg
    assert to_dict(cfg)["sizes"] == [7]


def test_yaml_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        from_yaml(Outer, tmp_path / "missing.yaml")
    dup = tmp_path / "dup.yaml"
    dup.write_text("steps: 1\nsteps: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'steps'"):
        from_yaml(Outer, dup)
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match=rf"{bad}: unknown key 'inner\.lrr'"):
        from_yaml(Outer, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        from_yaml(Outer, listy)
    (tmp_path / "empty.yaml").write_text("")
    assert from_yaml(Outer, tmp_path / "empty.yaml") == Outer()


def test_no_code_execution(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("steps: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        from_yaml(Outer, evil)


@pytest.mark.parametrize("name", ["toy2d.yaml", "toy2d_tiny.yaml"])
def test_shipped_configs_load_and_round_trip(name: str, tmp_path: Path) -> None:
    cfg = from_yaml(Toy2DConfig, REPO / "configs" / "core" / name)
    assert isinstance(cfg, RunConfig)
    (tmp_path / "c.yaml").write_text(to_yaml(cfg))
    assert from_yaml(Toy2DConfig, tmp_path / "c.yaml") == cfg


def test_engine_config_checks() -> None:
    with pytest.raises(ConfigError, match="not divisible by grad_accum"):
        from_dict(RunConfig, {"train": {"batch_size": 10, "grad_accum": 3}})
    with pytest.raises(ConfigError, match=r"train\.optim\.lr"):
        from_dict(RunConfig, {"train": {"optim": {"lr": "big"}}})
    with pytest.raises(ConfigError, match=r"'fp64' is not one of"):
        from_dict(RunConfig, {"train": {"precision": "fp64"}})
