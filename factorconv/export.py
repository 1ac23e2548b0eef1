"""Shipping a model: the form to ship (`export_form`: as trained, folded/deployed, or BDSC bit-packed), export
to ONNX / TorchScript / state_dict (`export_model`) with a check of the exported file against PyTorch
(`check_export`: onnxruntime for ONNX), and a compact, pickle-free file format for deploy-form state
(`save_compact`, `load_compact`).

The format is the magic b"FCV1", a little-endian u32 header length, a zlib-compressed JSON header (one
entry per tensor: name, dtype, shape, byte offset) and the tensors' raw bytes back to back. Nothing is
unpickled on load, so a file from anywhere is safe to read; and with one blob instead of one archive
member per tensor, the file is within a few hundred bytes of the bytes it stores (torch.save adds about
10% on a 1 MB model of 300 small tensors).
"""

from __future__ import annotations

import copy
import io
import json
import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor, nn

from .outputs import OutputError, is_write_failure, write_atomic

__all__ = ["FORMATS", "check_export", "compact_size", "export_form", "export_model", "load_compact", "save_compact"]

FORMATS = ("onnx", "torchscript", "state_dict")


def export_form(model: nn.Module, *, fold: bool = False, pack: bool = False, objective: str = "size",
                runtime: str | None = None, input_size: tuple[int, ...] | None = None, batch: int = 1) -> nn.Module:
    """An eval-mode copy of `model` in the form to ship: as it is; with `fold`, every operator in its deploy
    form (`factorconv.deploy` with `objective`: "size", the folded conv or the factorized form where that is
    smaller; "latency", the exact form that runs fastest in `runtime` for inputs of `input_size` at `batch`);
    with `pack`, BDSC layers bit-packed (and, with `fold` too, every other operator deployed for size)."""
    from .convert import pack as pack_model
    from .deployment import deploy

    shipped = copy.deepcopy(model).eval()
    if pack:
        shipped = pack_model(shipped)
    if fold:
        shipped = deploy(shipped, objective, runtime=runtime, input_size=input_size, batch=batch)
    return shipped.eval()


def export_model(model: nn.Module, path: str | Path, fmt: str, example: Tensor, *, opset: int = 17,
                 dynamo: bool = False, constant_folding: bool = True) -> Path:
    """Write `model` (eval mode, as given) to `path` as ONNX (batch axis dynamic), TorchScript (traced, or
    scripted when tracing fails) or a state_dict file; written to a temporary name and renamed, so a failed
    export leaves no partial file. `constant_folding=False` keeps ONNX from precomputing weights (a packed
    BDSC configuration would otherwise be stored unpacked, as floats). Returns the path."""
    if fmt not in FORMATS:
        raise ValueError(f"export: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model = model.eval()

    def write(tmp: Path) -> None:
        try:
            _export_to(model, tmp, fmt, example, opset=opset, dynamo=dynamo, constant_folding=constant_folding)
        except (OSError, OutputError):
            raise
        except Exception as err:  # the exporters' own messages run to pages of graph dumps
            if is_write_failure(err):
                raise
            first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
            raise ValueError(f"export: {fmt} export of {type(model).__name__} failed: {first[:300]}") from None

    return write_atomic(path, write)


def _export_to(model: nn.Module, path: Path, fmt: str, example: Tensor, *, opset: int, dynamo: bool,
               constant_folding: bool) -> None:
    if fmt == "state_dict":
        torch.save(model.state_dict(), path)
    elif fmt == "torchscript":
        with torch.no_grad():
            try:
                scripted = torch.jit.script(model)
            except Exception:  # models with Python-only constructs still trace
                scripted = _trace(model, example)
        scripted.save(str(path))
    else:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if dynamo:
                torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                                  dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset)
            else:  # the TorchScript-based exporter: 10x faster here, and it handles every operator
                torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"],
                                  output_names=["logits"], dynamic_axes={"input": {0: "batch"}},
                                  opset_version=opset, do_constant_folding=constant_folding)


def _trace(model: nn.Module, example: Tensor) -> torch.jit.ScriptModule:
    """`model` traced on `example`. torch's own trace check compares the graphs of two tracing runs, and an
    operator's eval-mode kernel cache makes the second graph differ from the first (it reads the cached kernel
    instead of composing it) though both compute the same; so the trace is checked on what it computes: its
    outputs on the example and on a batch of another size must equal the model's (relative 1e-4)."""
    traced = torch.jit.trace(model, (example,), check_trace=False)
    other = torch.randn(example.shape[0] + 2, *example.shape[1:], generator=torch.Generator().manual_seed(1))
    for x in (example, other):
        expected, got = model(x), traced(x)
        scale = max(expected.abs().max().item(), 1e-12)
        if got.shape != expected.shape or (got - expected).abs().max().item() > 1e-4 * scale:
            raise ValueError("the traced model does not reproduce the model's outputs (data-dependent control "
                             "flow?); export it with --fold")
    return traced


def check_export(path: str | Path, fmt: str, reference: nn.Module, inputs: Sequence[Tensor]) -> dict[str, Any]:
    """Run the exported file on each input (onnxruntime for ONNX, torch.jit.load for TorchScript, the
    reference architecture with the loaded weights for a state_dict) and compare with `reference` (eval
    mode): the largest absolute and relative logit difference, and how often the top-1 classes agree (per
    image, or per pixel for a segmentation model: `agreement_of` says which)."""
    reference = reference.eval()
    run = _runner(Path(path), fmt, reference)
    worst, worst_rel, agree, total, images = 0.0, 0.0, 0, 0, 0
    for x in inputs:
        with torch.no_grad():
            expected = reference(x).float()
        got = run(x).float()
        if got.shape != expected.shape:
            raise ValueError(f"check: the exported model gives shape {tuple(got.shape)}, PyTorch "
                             f"{tuple(expected.shape)}")
        diff = (got - expected).abs().max().item()
        worst = max(worst, diff)
        worst_rel = max(worst_rel, diff / max(expected.abs().max().item(), 1e-12))
        same = got.argmax(1) == expected.argmax(1)  # per image, or per pixel for a segmentation model
        agree += int(same.sum())
        total += same.numel()
        images += len(x)
    return {"max_abs_error": worst, "max_rel_error": worst_rel, "top1_agreement": agree / max(total, 1),
            "images": images, "agreement_of": "pixels" if expected.dim() > 2 else "images"}


def _runner(path: Path, fmt: str, reference: nn.Module) -> Any:
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ValueError("check: ONNX needs onnxruntime (pip install 'factorconv[export]')") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.detach().cpu().float().numpy()})[0])
    if fmt == "torchscript":
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    elif fmt == "state_dict":
        loaded = copy.deepcopy(reference)
        loaded.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        loaded.eval()
    else:
        raise ValueError(f"check: format must be one of {', '.join(FORMATS)}, got {fmt!r}")

    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return loaded(x)

    return run

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
