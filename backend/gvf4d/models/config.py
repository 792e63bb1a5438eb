"""Model constructor arguments as dataclasses, read from the published config dicts (unknown keys are errors)."""
from __future__ import annotations

import dataclasses
from typing import TypeVar

C = TypeVar("C", bound="ModelConfig")


class ModelConfig:
    """Base of the models' config dataclasses. `NAME` names the model in error messages."""

    NAME = "model"

    @classmethod
    def from_dict(cls: type[C], d: dict) -> C:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown {cls.NAME} config keys {sorted(unknown)} (known: {sorted(fields)})")
        return cls(**d)

    @classmethod
    def coerce(cls: type[C], config: "C | dict") -> C:
        return config if isinstance(config, cls) else cls.from_dict(config)


class AttentionHeads:
    """For configs with num_heads / num_head_channels / model_channels: heads = num_heads, else channels per head."""

    @property
    def heads(self) -> int:
        return self.num_heads or self.model_channels // self.num_head_channels
