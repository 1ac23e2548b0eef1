"""The runtimes a deployed model ships to, behind one interface: `prepare(module, example)` turns a module into
a closure that runs one inference of `example` there (what gets timed), `version()` names the build.

- `torch`: PyTorch eager under inference_mode, in one memory format (`contiguous` or `channels_last`; which is
  faster depends on the model, so deploy measures both and says which it kept);
- `onnxruntime`: the module exported to ONNX (the exporter `factorconv export` uses, batch axis dynamic) and
  run by an InferenceSession on the CPU (extra `[export]`);
- `openvino`: the same ONNX graph compiled by OpenVINO for the CPU with the latency hint (extra `[openvino]`).

Every runtime runs on `threads` threads (default: torch's own count), so that timings in one process compare.
A runtime that is not installed is one ValueError naming the extra that installs it.
"""

from __future__ import annotations

import copy
import importlib
import io
import os
import tempfile
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["RUNTIMES", "Runtime", "get_runtime", "installed_runtimes", "onnx_bytes"]


def onnx_bytes(module: nn.Module, example: Tensor, opset: int = 17) -> bytes:
    """`module` as an ONNX graph (TorchScript-based exporter, batch axis dynamic, constants folded)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), buffer, dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}}, opset_version=opset)
    return buffer.getvalue()


class Runtime:
    """Base of the runtimes: `name`, the Python module that provides it, the extra that installs it."""

    name = ""
    module_name = ""
    extra = ""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or torch.get_num_threads()

    @classmethod
    def installed(cls) -> bool:
        try:
            importlib.import_module(cls.module_name)
        except ImportError:
            return False
        return True

    def version(self) -> str:
        return str(importlib.import_module(self.module_name).__version__)

    def label(self) -> str:
        """How figures name it: 'onnxruntime 1.32.0'."""
        return f"{self.name} {self.version()}"

    def key(self) -> str:
        """What a timing in this runtime depends on beyond the form: name, version, threads, settings."""
        return f"{self.name}={self.version()};threads={self.threads}"

    def prepare(self, module: nn.Module, example: Tensor) -> Callable[[], Any]:
        raise NotImplementedError


class TorchRuntime(Runtime):
    name = "torch"
    module_name = "torch"
    extra = ""
    FORMATS: ClassVar[dict[str, torch.memory_format]] = {"contiguous": torch.contiguous_format,
                                                          "channels_last": torch.channels_last}

    def __init__(self, threads: int | None = None, memory_format: str = "channels_last") -> None:
        super().__init__(threads)
        if memory_format not in self.FORMATS:
            raise ValueError(f"torch runtime: memory_format must be one of {', '.join(self.FORMATS)}, got "
                             f"{memory_format!r}")
        self.memory_format = memory_format

    def label(self) -> str:
        return f"torch {torch.__version__} eager ({self.memory_format})"

    def key(self) -> str:
        return super().key() + f";format={self.memory_format}"

    def prepare(self, module: nn.Module, example: Tensor) -> Callable[[], Any]:
        fmt = self.FORMATS[self.memory_format]
        module = copy.deepcopy(module).eval().to(memory_format=fmt)
        x = example.contiguous(memory_format=fmt)
        threads = self.threads

        def run() -> Any:
            previous = torch.get_num_threads()
            if previous != threads:
                torch.set_num_threads(threads)
            try:
                with torch.inference_mode():
                    return module(x)
            finally:
                if previous != threads:
                    torch.set_num_threads(previous)

        return run


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    module_name = "onnxruntime"
    extra = "export"

    def session(self, graph: bytes) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def prepare(self, module: nn.Module, example: Tensor) -> Callable[[], Any]:
        session = self.session(onnx_bytes(module, example))
        binding = session.io_binding()  # the input bound once, as a serving loop reuses its buffers
        binding.bind_cpu_input(session.get_inputs()[0].name, example.detach().cpu().numpy())
        binding.bind_output(session.get_outputs()[0].name)
        return lambda: session.run_with_iobinding(binding)


class OpenVinoRuntime(Runtime):
    name = "openvino"
    module_name = "openvino"
    extra = "openvino"

    def version(self) -> str:
        import openvino

        return openvino.get_version().split("-")[0] if hasattr(openvino, "get_version") else openvino.__version__

    def compiled(self, graph: bytes) -> Any:
        import openvino as ov

        core = ov.Core()
        with tempfile.TemporaryDirectory() as folder:  # OpenVINO reads an ONNX graph from a file
            path = os.path.join(folder, "model.onnx")
            with open(path, "wb") as f:
                f.write(graph)
            model = core.read_model(path)
        # f32 inference: OpenVINO's CPU plugin otherwise computes in bfloat16 wherever the CPU has it (an AMD
        # EPYC here: 2e-3 relative logit error), which is another model, not an exact form of this one
        return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": 1,
                                                 "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})

    def prepare(self, module: nn.Module, example: Tensor) -> Callable[[], Any]:
        import openvino as ov

        request = self.compiled(onnx_bytes(module, example)).create_infer_request()
        request.set_input_tensor(ov.Tensor(example.detach().cpu().numpy()))  # bound once, as a serving loop does
        return request.infer


RUNTIMES: dict[str, type[Runtime]] = {"torch": TorchRuntime, "onnxruntime": OnnxRuntime,
                                      "openvino": OpenVinoRuntime}


def installed_runtimes() -> list[str]:
    """The runtimes this environment can run, in RUNTIMES order."""
    return [name for name, cls in RUNTIMES.items() if cls.installed()]


def get_runtime(name: str, threads: int | None = None, **options: Any) -> Runtime:
    """The runtime `name` (one of RUNTIMES); ValueError naming the extra to install when it is missing."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; expected one of {', '.join(RUNTIMES)} (or best)")
    cls = RUNTIMES[name]
    if not cls.installed():
        raise ValueError(f"runtime {name} is not installed: pip install 'factorconv[{cls.extra}]' (or pip install "
                         f"{cls.module_name})")
    return cls(threads, **options)
