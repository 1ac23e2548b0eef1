"""How an operator's composed kernel lives at run time: in the memory format of the input it meets (with
exactly that format's strides), composed for the eval cache outside autocast and inference mode."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["compose_for_cache", "dense_strides", "full_precision", "in_layout"]


def dense_strides(shape: torch.Size, memory_format: torch.memory_format) -> tuple[int, ...]:
    """The strides of a freshly allocated 4-d tensor of `shape` in `memory_format`."""
    _, c, h, w = shape
    return (c * h * w, 1, w * c, c) if memory_format == torch.channels_last else (c * h * w, h * w, w, 1)


def in_layout(kernel: Tensor, memory_format: torch.memory_format) -> Tensor:
    """`kernel` with exactly the strides of a fresh tensor in `memory_format` (a copy only when it has others).

    `contiguous()` is not enough: a tensor with size-1 dims counts as contiguous in both formats whatever
    those dims' strides. A 1x1 kernel with channels_last strides, given to conv2d with an NCHW input whose
    width is 1 (also "both"), crashed the process (segfault, torch 2.13 CPU, with stride/dilation/padding
    > 1; hypothesis found it for bdsc)."""
    if kernel.stride() == dense_strides(kernel.shape, memory_format):
        return kernel
    return kernel.clone(memory_format=memory_format)


def compose_for_cache(compose: Callable[[], Tensor], device: torch.device | None) -> Tensor:
    """`compose()` as a tensor to keep across calls: a normal tensor even under inference_mode (a frozen
    model may later run with grad enabled for input gradients, and conv must then save its weight for
    backward), without grad, and at the parameters' precision rather than autocast's (the cache outlives
    the autocast region, and the conv casts the kernel when it runs under one)."""
    with torch.inference_mode(False), torch.no_grad(), full_precision(device):
        return compose()


def full_precision(device: torch.device | None) -> contextlib.AbstractContextManager[Any]:
    """Autocast off on `device` (a no-op context where autocast does not exist, e.g. the meta device)."""
    if device is None or not torch.amp.is_autocast_available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


