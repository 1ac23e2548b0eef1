"""Backbones, one family per module; importing this package registers them all."""

from .cifar_resnet import BasicBlock, CifarResNet
from .darts import DartsNetwork
from .deeplab import DeepLabV3
from .densenet import DenseNet
from .igc import IGCV3, IGCV2Block, IGCV2Mobilenet, IGCV3Block, XceptionBlock
from .igc8 import EightLayerNet
from .layers import ConvFactory, ConvNormAct, scale_width
from .mobilenet import MobileNetV1, MobileNetV2
from .mobilenet_v3 import MobileNetV3
from .preact_resnet import PreActResNet
from .resnet import ResNet
from .vgg import VGG

__all__ = [
    "IGCV3",
    "VGG",
    "BasicBlock",
    "CifarResNet",
    "ConvFactory",
    "ConvNormAct",
    "DartsNetwork",
    "DeepLabV3",
    "DenseNet",
    "EightLayerNet",
    "IGCV2Block",
    "IGCV2Mobilenet",
    "IGCV3Block",
    "MobileNetV1",
    "MobileNetV2",
    "MobileNetV3",
    "PreActResNet",
    "ResNet",
    "XceptionBlock",
    "scale_width",
]
