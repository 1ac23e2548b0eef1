"""Backbones, one family per module; importing this package registers them all."""

from .cifar_resnet import BasicBlock, CifarResNet
from .densenet import DenseNet
from .layers import ConvFactory, ConvNormAct, scale_width
from .mobilenet import MobileNetV1, MobileNetV2
from .preact_resnet import PreActResNet
from .resnet import ResNet
from .vgg import VGG

__all__ = [
    "VGG",
    "BasicBlock",
    "CifarResNet",
    "ConvFactory",
    "ConvNormAct",
    "DenseNet",
    "MobileNetV1",
    "MobileNetV2",
    "PreActResNet",
    "ResNet",
    "scale_width",
]
