"""What every backbone shares: the keyword arguments it takes beside its own, checked in one place, and its
classifier head.

A backbone class inherits `Backbone`, declares only its own arguments and takes the shared ones
(`BackboneArgs`: the operator and its options, the width multiplier, classes, input channels, stem
replacement, norm and activation layers) as `**common`. `Backbone` gives the class a signature that lists
both, so `create_model` checks options against it and reads its defaults from it as from any builder;
`self.common_args(name, common)` checks the shared ones (each a ValueError naming the model and the option).
A class whose own signature declares a shared argument gives it a default of its own (MobileNetV2's
activation is ReLU6) and passes it on.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from ..registry import ConvBuilder
from .layers import ConvFactory, check_positive, default_act

__all__ = ["Backbone", "BackboneArgs", "ClassifierHead"]


@dataclasses.dataclass(frozen=True)
class BackboneArgs:
    """The keyword arguments every backbone takes, with their defaults."""

    conv: str | ConvBuilder = "conv"
    conv_kwargs: dict[str, Any] | None = None
    width: float = 1.0
    num_classes: int = 10
    in_chans: int = 3
    replace_stem: bool | None = None
    norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d
    act_layer: Callable[[], nn.Module] = default_act

    def check(self, model: str) -> BackboneArgs:
        check_positive(model, "width", self.width)
        check_positive(model, "num_classes", self.num_classes, int)
        check_positive(model, "in_chans", self.in_chans, int)
        return self

    def block_layers(self, conv_layer: Callable[..., nn.Module]) -> dict[str, Any]:
        """The layer keywords every block takes: its conv factory, norm and activation layers."""
        return {"conv_layer": conv_layer, "norm_layer": self.norm_layer, "act_layer": self.act_layer}

    def norm_act(self) -> dict[str, Any]:
        """The norm and activation keywords of ConvNormAct."""
        return {"norm_layer": self.norm_layer, "act_layer": self.act_layer}

    def convs(self, conv_kwargs: dict[str, Any] | None = None) -> ConvFactory:
        """The factory the backbone's convs are built by (`conv_kwargs` in place of the given options)."""
        return ConvFactory(self.conv, self.conv_kwargs if conv_kwargs is None else conv_kwargs, self.replace_stem)


_SHARED = tuple(
    inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
    for f in dataclasses.fields(BackboneArgs)
)


class Backbone:
    """Mixin of the backbones: the class's signature is its constructor's own arguments followed by the
    shared ones it does not declare itself (recomposed for every subclass, so a subclass's own defaults show)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = [p for p in inspect.signature(cls.__init__).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD][1:]  # without self
        names = {p.name for p in own}
        cls.__signature__ = inspect.Signature(own + [p for p in _SHARED if p.name not in names])

    def common_args(self, model: str, common: dict[str, Any], **own: Any) -> BackboneArgs:
        """The shared arguments `common` (passed as keywords) and those the class declares itself (`own`),
        checked."""
        unknown = sorted(set(common) - {p.name for p in _SHARED})
        if unknown:
            raise TypeError(f"{model}: unexpected option(s) {', '.join(map(repr, unknown))}")
        return BackboneArgs(**common, **own).check(model)


class ClassifierHead:
    """Mixin of the classification backbones: one classifier head, the same modules and state_dict keys in
    every one of them. `add_classifier` installs `pool` (global average), `flatten`, `drop` (nn.Dropout, or
    nn.Identity without dropout: no parameters either way) and `fc`; `classify` runs them (TorchScript compiles
    it as a method of the model)."""

    def add_classifier(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def classify(self, features: Tensor) -> Tensor:
        return self.fc(self.drop(self.flatten(self.pool(features))))
