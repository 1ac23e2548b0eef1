"""Deploying for latency: every operator layer in the exact form (`forms.layer_forms`) that runs fastest in the
target runtime at the layer's real input shape.

For each layer, its forms are timed in the runtime, interleaved, at the shape the layer meets in the model
(batch `batch`), and the fastest is kept (the size form on ties). Timings are weight-independent, so layers of
one structure and shape are timed once, and every timing goes to the on-disk cache (`cache.TimingCache`): a
second deploy on the machine times nothing. The assembled model is then timed whole beside the size form
(layers interact: a layout change between two layers is nobody's layer), and the size form is kept where the
choice turns out slower as a whole. `runtime="best"` does this in every installed runtime and keeps the fastest;
`runtime="torch"` in both memory formats.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..bench import compare_timings
from ..checks import is_int
from ..convert import _swap_operators, iter_operators
from ..convert import deploy as size_deploy
from .cache import TimingCache
from .forms import Form, layer_forms
from .runtimes import Runtime, TorchRuntime, get_runtime, installed_runtimes

__all__ = ["DeployReport", "choose_forms", "default_runtime", "deploy_latency"]

OBJECTIVES = ("size", "latency")


@dataclass
class DeployReport:
    """What a latency deploy chose: the runtime (its label), the batch and input size, the form of each operator
    layer, the whole model's median ms in that form and in the size form, which was kept, and the largest
    relative logit difference from the model it was deployed from."""

    runtime: str
    batch: int
    input_size: tuple[int, ...]
    forms: dict[str, str] = field(default_factory=dict)
    latency_ms: float | None = None
    size_ms: float | None = None
    kept: str = "latency"
    max_rel_diff: float | None = None
    tried: dict[str, float] = field(default_factory=dict)  # runtime label -> ms, for runtime="best"
    runtime_name: str = ""
    memory_format: str | None = None  # torch: the memory format it was timed (and is fastest) in

    def runtime_object(self, threads: int | None = None) -> Runtime:
        """The runtime it was deployed for, with its settings (to run or time the deployed model there)."""
        options = {"memory_format": self.memory_format} if self.memory_format else {}
        return get_runtime(self.runtime_name, threads, **options)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_runtime() -> str:
    """onnxruntime where it is installed (what `factorconv export` ships), else torch."""
    return "onnxruntime" if "onnxruntime" in installed_runtimes() else "torch"


def _input_shapes(model: nn.Module, input_size: tuple[int, ...], batch: int) -> dict[int, tuple[int, ...]]:
    """id(operator) -> the shape of its input when `model` runs a batch of `batch` at `input_size`."""
    shapes: dict[int, tuple[int, ...]] = {}

    def record(module: nn.Module, args: tuple[Any, ...], _out: Any) -> None:
        shapes.setdefault(id(module), (batch, *args[0].shape[1:]))

    hooks = [op.register_forward_hook(record) for _, op in iter_operators(model)]
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size, device=device))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _time_forms(forms: list[Form], shape: tuple[int, ...], runtime: Runtime, repeats: int) -> dict[str, float]:
    """Median ms of each form at `shape` in `runtime`, interleaved; inf for a form the runtime cannot run."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    runners, failed = {}, {}
    for form in forms:
        try:
            runners[form.name] = runtime.prepare(form.module, x)
        except Exception:  # a form this runtime cannot take is never chosen
            failed[form.name] = math.inf
    if not runners:
        return failed
    timings = compare_timings(runners, repeats=repeats, warmup=2)
    return {t.name: 1e3 * t.median_s for t in timings} | failed


def choose_forms(model: nn.Module, runtime: Runtime, input_size: tuple[int, ...], batch: int = 1,
                 repeats: int = 15, cache: TimingCache | None = None) -> dict[str, Form]:
    """The form chosen for every operator layer of `model`, by the layer's name."""
    cache = cache or TimingCache()
    shapes = _input_shapes(model, input_size, batch)
    known: dict[str, float] = {}
    new: dict[str, dict[str, Any]] = {}
    chosen: dict[str, Form] = {}
    for name, op in iter_operators(model):
        forms = layer_forms(op)
        shape = shapes.get(id(op))
        if len(forms) == 1 or shape is None:  # one form, or a layer the forward never reaches
            chosen[name] = forms[0]
            continue
        keys = {f.name: cache.key(runtime, f.signature, shape) for f in forms}
        times = {f.name: known.get(keys[f.name], cache.get(keys[f.name])) for f in forms}
        todo = [f for f in forms if times[f.name] is None]
        if todo:
            for form_name, ms in _time_forms(todo, shape, runtime, repeats).items():
                times[form_name] = known[keys[form_name]] = ms
                if math.isfinite(ms):
                    new[keys[form_name]] = {"ms": ms, "runtime": runtime.label(), "shape": list(shape)}
        best = min(forms, key=lambda f: (times[f.name], forms.index(f)))
        chosen[name] = best
    cache.put(new)
    return chosen


def _assemble(model: nn.Module, chosen: dict[str, Form]) -> nn.Module:
    """`model` (the one the forms were chosen for, or a copy of it) with each operator in its chosen form."""
    names = {id(op): name for name, op in iter_operators(model)}

    def replace(op: nn.Module) -> nn.Module:
        form = chosen.get(names[id(op)])
        return copy.deepcopy(form.module) if form is not None else size_deploy(op)

    return _swap_operators(model, replace)


def _max_rel_diff(reference: nn.Module, deployed: nn.Module, example: torch.Tensor) -> float:
    with torch.no_grad():
        ref = reference(example)
        return float((deployed(example) - ref).abs().max()) / max(float(ref.abs().max()), 1e-12)


def _one_runtime(model: nn.Module, runtime: Runtime, input_size: tuple[int, ...], batch: int, repeats: int,
                 cache: TimingCache) -> tuple[dict[str, Form] | None, DeployReport]:
    """The forms chosen for `model`'s layers in `runtime` (None: the size form, kept because the choice was
    slower as a whole) and the report, from timing copies of the model whole."""
    chosen = choose_forms(model, runtime, input_size, batch, repeats, cache)
    report = DeployReport(runtime.label(), batch, tuple(input_size),
                          {name: form.name for name, form in chosen.items()}, runtime_name=runtime.name,
                          memory_format=getattr(runtime, "memory_format", None))
    x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(1))
    size = size_deploy(copy.deepcopy(model).eval())
    runners = {"size": runtime.prepare(size, x)}
    if any(form.name != "size" for form in chosen.values()):
        runners["latency"] = runtime.prepare(_assemble(copy.deepcopy(model).eval(), chosen), x)
    timings = {t.name: 1e3 * t.median_s for t in compare_timings(runners, repeats=repeats, warmup=2)}
    report.size_ms = timings["size"]
    report.latency_ms = timings.get("latency", timings["size"])
    if report.latency_ms > report.size_ms:  # the per-layer choice is slower as a whole: ship the size form
        report.kept, report.latency_ms = "size", report.size_ms
        report.forms = dict.fromkeys(report.forms, "size")
        return None, report
    return chosen, report


def _runtimes(name: str, threads: int | None) -> list[Runtime]:
    names = installed_runtimes() if name == "best" else [name]
    out: list[Runtime] = []
    for n in names:
        if n == "torch":  # eager: whichever memory format is faster for this model
            out += [get_runtime("torch", threads, memory_format=f) for f in TorchRuntime.FORMATS]
        else:
            out.append(get_runtime(n, threads))
    return out


def deploy_latency(model: nn.Module, runtime: str | None = None, input_size: tuple[int, ...] | None = None,
                   batch: int = 1, repeats: int = 15, cache: TimingCache | None = None,
                   threads: int | None = None) -> nn.Module:
    """Replace, in place, every operator layer of `model` with its fastest exact form in `runtime` ("torch",
    "onnxruntime", "openvino" or "best"; default: `default_runtime()`), for inputs of `input_size` (C, H, W) at
    `batch`; returns the model, whose `deploy_report` (a DeployReport) says what was chosen and measured."""
    if input_size is None:
        raise ValueError("deploy(objective='latency') needs input_size=(C, H, W): each layer is timed at the "
                         "input shape it meets in the model")
    input_size = tuple(int(v) for v in input_size)
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(f"deploy: input_size must be (C, H, W) with positive sizes, got {input_size!r}")
    if not is_int(batch) or batch < 1:
        raise ValueError(f"deploy: batch must be a positive integer, got {batch!r}")
    runtimes = _runtimes(runtime or default_runtime(), threads)
    cache = cache or TimingCache()
    model.eval()
    reference = copy.deepcopy(model)
    results = [_one_runtime(model, rt, input_size, batch, repeats, cache) for rt in runtimes]
    chosen, report = min(results, key=lambda r: r[1].latency_ms)
    if len(results) > 1:
        report.tried = {r.runtime: r.latency_ms for _, r in results}
    deployed = size_deploy(model) if chosen is None else _assemble(model, chosen)
    from ..accounting import training_only

    for name in training_only(deployed):  # as the size form does
        setattr(deployed, name, None)
    x = torch.randn(min(batch, 8), *input_size, generator=torch.Generator().manual_seed(2))
    report.max_rel_diff = _max_rel_diff(reference, deployed, x)
    deployed.deploy_report = report
    return deployed
