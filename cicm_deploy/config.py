"""Model configuration: frozen dataclasses, presets, and (de)serialization.

A checkpoint stores ``ModelConfig.to_dict()``; ``ModelConfig.from_dict`` rebuilds the exact
model from it alone, and refuses unknown or ill-typed fields with a message that names them.
No torch import here: the runtime side reads configs from bundle manifests.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

UPDATE_SCOPES = ("all", "top50", "top1")
AUGMENT_SCOPES = ("all", "top50", "top1")
UPDATE_RULES = ("bounded", "additive")
MEMORY_MODES = ("sets", "anchor_only", "merged")
RATIO_MODES = ("predicted", "none", "mask")
GAMMA_CONVENTIONS = ("described", "printed")
SIMILARITY_LOSSES = ("cosine", "dot")
HOLE_FILLS = ("zeros", "push-pull", "smooth-push-pull", "harmonic")
OUTPUTS = ("direct", "residual")


class ConfigError(ValueError):
    """A configuration that cannot describe a model."""


@dataclass(frozen=True)
class MemoryConfig:
    """The cross-image context memory (paper Sec. 4) and its ablation switches."""

    num_sets: int = 13  # L: number of feature sets, one anchor each (paper default 13)
    set_size: int = 40  # K: cross-image features per set (paper default 40)
    momentum: float = 0.5  # beta of Eq. 3: anchor momentum after each batch (paper 0.5)
    update_rule: str = "bounded"  # "additive" = Eq. 2 as printed; "bounded" = convex update, FP16-safe
    update_rate: float = 0.5  # eta of the bounded rule: how far a set vector moves per batch (0, 1]
    update_scope: str = "all"  # set vectors moved per feature: "all" (paper), "top50", "top1"
    augment_scope: str = "all"  # set vectors mixed per feature: "all" (paper), "top50", "top1"
    mode: str = "sets"  # "sets" = CICM; "anchor_only" and "merged" = the paper's Table 2 ablations
    ratio: str = "predicted"  # context weight: "predicted" (gamma head), "none" (always 1), "mask" (hole fraction)
    gamma_convention: str = "described"  # "described": gamma weights the context; "printed": Eq. 4 literally
    region_size: int = 1  # bottleneck positions per region side (the paper leaves it open; 1 = one position)
    similarity_loss: str = "cosine"  # L_inter/L_intra on "cosine" similarities (bounded) or raw "dot" (Eq. 8)
    init_scale: float = 0.1  # std of the random normal initialisation of anchors and sets

    def __post_init__(self) -> None:
        _positive(self, "num_sets", "set_size", "region_size")
        _choice(self, "update_rule", UPDATE_RULES)
        _choice(self, "update_scope", UPDATE_SCOPES)
        _choice(self, "augment_scope", AUGMENT_SCOPES)
        _choice(self, "mode", MEMORY_MODES)
        _choice(self, "ratio", RATIO_MODES)
        _choice(self, "gamma_convention", GAMMA_CONVENTIONS)
        _choice(self, "similarity_loss", SIMILARITY_LOSSES)
        if not 0.0 <= self.momentum <= 1.0:
            raise ConfigError(f"momentum must lie in [0, 1], got {self.momentum}")
        if not 0.0 < self.update_rate <= 1.0:
            raise ConfigError(f"update_rate must lie in (0, 1], got {self.update_rate}")
        if self.init_scale <= 0:
            raise ConfigError(f"init_scale must be positive, got {self.init_scale}")


@dataclass(frozen=True)
class ModelConfig:
    """UNet-CICM (or the plain UNet when ``cicm_levels`` is empty)."""

    in_channels: int = 3  # image channels (RGB)
    width: int = 64  # channels of the first UNet level; doubled per level up to max_width
    max_width: int = 256  # channel cap for the deeper levels
    depth: int = 3  # downsamplings; with depth 3 the UNet has the paper's 15 conv layers, stride 8
    hole_fill: str = "zeros"  # what the network sees in the hole: "zeros" (paper), or a colour fill: "harmonic" (default model), "push-pull", "smooth-push-pull"
    output: str = "direct"  # "direct": sigmoid(head) (paper); "residual": the hole fill plus a learned correction
    cicm_levels: tuple[int, ...] = (3,)  # encoder levels with a memory (0 = full res, depth = bottleneck); () = plain UNet
    memory: MemoryConfig = field(default_factory=MemoryConfig)  # shared settings of every memory

    def __post_init__(self) -> None:
        _positive(self, "in_channels", "width", "max_width", "depth")
        _choice(self, "hole_fill", HOLE_FILLS)
        _choice(self, "output", OUTPUTS)
        levels = tuple(int(v) for v in self.cicm_levels)
        object.__setattr__(self, "cicm_levels", levels)
        for level in levels:
            if not 0 <= level <= self.depth:
                raise ConfigError(
                    f"cicm_levels entries must lie in 0..depth={self.depth}, got {level}")
        if len(set(levels)) != len(levels):
            raise ConfigError(f"cicm_levels has duplicates: {levels}")
        if not isinstance(self.memory, MemoryConfig):
            raise ConfigError(f"memory must be a MemoryConfig, got {type(self.memory).__name__}")

    @property
    def uses_cicm(self) -> bool:
        return bool(self.cicm_levels)

    def channels(self, level: int) -> int:
        """Channels of the encoder feature map at ``level`` (0 = full resolution)."""
        return min(self.width * 2**level, self.max_width)

    @property
    def stride(self) -> int:
        """Input height and width must be multiples of this (padding handles the rest)."""
        sizes = [2**level * self.memory.region_size for level in self.cicm_levels]
        return math.lcm(2**self.depth, *sizes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cicm_levels"] = list(self.cicm_levels)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        if not isinstance(data, Mapping):
            raise ConfigError(f"a model config must be a mapping, got {type(data).__name__}")
        data = dict(data)
        memory = _build(MemoryConfig, data.pop("memory", {}), "model_config.memory")
        model = _build(cls, data, "model_config", memory=memory)
        return model

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with top-level fields or ``memory_<field>`` entries changed."""
        memory_changes = {k[len("memory_"):]: v for k, v in changes.items() if k.startswith("memory_")}
        top = {k: v for k, v in changes.items() if not k.startswith("memory_")}
        memory = dataclasses.replace(self.memory, **memory_changes)
        return dataclasses.replace(self, memory=memory, **top)


def _build(cls: type, data: Any, where: str, **fixed: Any) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where} has unknown fields {unknown}; known fields: {sorted(names)}")
    kwargs = dict(data)
    for f in dataclasses.fields(cls):
        if f.name in kwargs and f.name not in fixed:
            kwargs[f.name] = _coerce(kwargs[f.name], f, where)
    kwargs.update(fixed)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind == "str":
            if not isinstance(value, str):
                raise TypeError
            return value
        if kind.startswith("tuple"):
            return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{f.name} must be {kind}, got {value!r}") from None
    return value


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _choice(obj: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


PRESETS: dict[str, ModelConfig] = {
    # Paper-sized memory on a 64-wide UNet with 15 conv layers.
    "paper": ModelConfig(),
    # Trains in minutes on a CPU: a narrow UNet and a small memory.
    "tiny": ModelConfig(width=16, max_width=64, memory=MemoryConfig(num_sets=4, set_size=8)),
    # The plain UNet baseline the memory augments (same backbone as "paper").
    "unet": ModelConfig(cicm_levels=()),
    "tiny-unet": ModelConfig(width=16, max_width=64, cicm_levels=()),
    # The shipped default model: the tiny backbone with the paper's memory (L=13, K=40).
    "default": ModelConfig(width=16, max_width=64, hole_fill="harmonic", output="residual"),
    # Its plain-UNet twin, trained the same way for the comparison.
    "default-unet": ModelConfig(width=16, max_width=64, hole_fill="harmonic", output="residual", cicm_levels=()),
}


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None
