"""Shipping a model: a compact, pickle-free file format for deploy-form state (`save_compact`,
`load_compact`).

The format is the magic b"FCV1", a little-endian u32 header length, a zlib-compressed JSON header (one
entry per tensor: name, dtype, shape, byte offset) and the tensors' raw bytes back to back. Nothing is
unpickled on load, so a file from anywhere is safe to read; and with one blob instead of one archive
member per tensor, the file is within a few hundred bytes of the bytes it stores (torch.save adds about
10% on a 1 MB model of 300 small tensors).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor, nn

__all__ = ["compact_size", "load_compact", "save_compact"]

MAGIC = b"FCV1"
_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool,
)}


def save_compact(state: nn.Module | dict[str, Tensor], f: str | Path | BinaryIO) -> int:
    """Write a module's state_dict (or a state dict) in the compact format; returns the bytes written."""
    tensors = state.state_dict() if isinstance(state, nn.Module) else state
    entries, chunks, offset = [], [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise ValueError(f"save_compact: tensor {name!r} has unsupported dtype {t.dtype}")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        entries.append([name, dtype, list(t.shape), offset])
        chunks.append(raw)
        offset += len(raw)
    header = zlib.compress(json.dumps(entries, separators=(",", ":")).encode(), 9)
    blob = MAGIC + struct.pack("<I", len(header)) + header + b"".join(chunks)
    if isinstance(f, str | Path):
        Path(f).write_bytes(blob)
    else:
        f.write(blob)
    return len(blob)


def load_compact(f: str | Path | BinaryIO) -> dict[str, Tensor]:
    """Read a compact file into a state dict (CPU tensors). Raises ValueError for anything else."""
    data = Path(f).read_bytes() if isinstance(f, str | Path) else f.read()
    where = f if isinstance(f, str | Path) else "<stream>"
    if len(data) < 8 or data[:4] != MAGIC:
        raise ValueError(f"load_compact: {where} is not a factorconv compact file (no {MAGIC!r} header)")
    (size,) = struct.unpack("<I", data[4:8])
    try:
        entries = json.loads(zlib.decompress(data[8:8 + size]))
    except (zlib.error, ValueError) as err:
        raise ValueError(f"load_compact: {where} has a corrupt header ({err})") from None
    body = memoryview(data)[8 + size:]
    state = {}
    for name, dtype, shape, offset in entries:
        if dtype not in _DTYPES:
            raise ValueError(f"load_compact: {where}: tensor {name!r} has unknown dtype {dtype!r}")
        t_dtype = _DTYPES[dtype]
        count = 1
        for dim in shape:
            count *= dim
        nbytes = count * torch.empty(0, dtype=t_dtype).element_size()
        if offset < 0 or offset + nbytes > len(body):
            raise ValueError(f"load_compact: {where} is truncated (tensor {name!r} runs past the end)")
        raw = bytes(body[offset:offset + nbytes])
        state[name] = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(t_dtype).reshape(shape).clone() \
            if nbytes else torch.empty(shape, dtype=t_dtype)
    return state


def compact_size(state: nn.Module | dict[str, Tensor]) -> int:
    """Bytes the compact format takes for this state."""
    return save_compact(state, io.BytesIO())
