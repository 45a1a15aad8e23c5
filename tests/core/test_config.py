"""Model configuration: paper defaults, validation, and the dict round trip checkpoints rely on."""

from __future__ import annotations

import dataclasses

import pytest

from cicm_deploy.config import PRESETS, ConfigError, MemoryConfig, ModelConfig, preset


def test_paper_defaults():
    cfg = ModelConfig()
    assert (cfg.memory.num_sets, cfg.memory.set_size, cfg.memory.momentum) == (13, 40, 0.5)
    assert cfg.cicm_levels == (cfg.depth,) and cfg.stride == 8


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().width = 3


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_round_trip(name):
    cfg = preset(name)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_replace_reaches_memory_fields():
    cfg = ModelConfig().replace(width=8, memory_num_sets=3, memory_ratio="none")
    assert cfg.width == 8 and cfg.memory.num_sets == 3 and cfg.memory.ratio == "none"


@pytest.mark.parametrize("data,message", [
    ({"widht": 3}, "unknown fields ['widht']"),
    ({"memory": {"num_set": 3}}, "model_config.memory has unknown fields"),
    ({"width": "wide"}, "model_config.width must be int"),
    ({"width": 2.5}, "model_config.width must be int"),
    ({"memory": {"mode": "clusters"}}, "mode must be one of sets, anchor_only, merged"),
    ({"memory": {"momentum": 2.0}}, "momentum must lie in [0, 1]"),
    ({"cicm_levels": [7]}, "cicm_levels entries must lie in 0..depth=3"),
    ({"depth": 0}, "depth must be a positive integer"),
    ({"hole_fill": "telea"}, "hole_fill must be one of zeros, push-pull"),
    ([1, 2], "must be a mapping"),
])
def test_invalid_configs_name_the_problem(data, message):
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_dict(data)
    assert message in str(info.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset("huge")


def test_stride_accounts_for_regions_and_levels():
    assert ModelConfig(memory=MemoryConfig(region_size=2)).stride == 16
    assert ModelConfig(cicm_levels=(1,), memory=MemoryConfig(region_size=3)).stride == 24
    assert ModelConfig(cicm_levels=()).stride == 8
