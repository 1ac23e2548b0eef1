"""Backbones, one family per module; importing this package registers them all."""

from .cifar_resnet import BasicBlock, CifarResNet
from .layers import ConvFactory, scale_width

__all__ = ["BasicBlock", "CifarResNet", "ConvFactory", "scale_width"]
