"""The operator protocol every factorconv operator follows, and what they share.

An operator is an `nn.Module` with the constructor and semantics of `nn.Conv2d` plus keyword-only options
of its own, and:

- `dense_weight()` / `dense_bias()`: the equivalent conv kernel and bias, so that
  `F.conv2d(x, op.dense_weight(), op.dense_bias(), op.stride, op.padding, op.dilation, op.groups) == op(x)`
  (in eval mode for operators with a BatchNorm inside);
- `fold()`: that equivalent as a plain `nn.Conv2d`; `deploy()`: the form to ship (fold() unless the
  operator's factorized form is smaller);
- `cost(in_hw)`: parameters, bits, MACs and deploy costs from closed forms;
- `from_conv(conv, **options)`: an operator initialised from an existing conv (exact where the operator
  can represent it, otherwise a documented least-squares fit whose relative error is `op.fit_error`).

`ConvOperator` implements the shared machinery: argument validation (ValueError naming the option),
the eval-mode cache of the composed kernel, and the choice between kernel composition (compose the dense
kernel, run one conv) and feature composition (run the factors as a chain) from a cost model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .examples import Draw, ExampleShape
from .fitting import fit_kernel
from .runtime import compose_for_cache, dense_strides, in_layout
from .spec import ConvSpec, Cost, float_bits
from .speed import FEATURE_PATH_MARGIN

__all__ = ["PATHS", "ConvOperator", "OperatorMixin", "is_operator"]

PATHS = ("auto", "kernel", "feature")


def is_operator(module: nn.Module) -> bool:
    """Whether `module` follows the operator protocol (a factorconv operator, including `conv`)."""
    return isinstance(module, OperatorMixin)


class NormAffine:
    """Mixin of the layers with an inner BatchNorm `self.norm` (or None): folding it. A method, so that
    TorchScript compiles it with the layer (a free function taking the BatchNorm would not script)."""

    def _norm_affine(self) -> tuple[Tensor, Tensor] | None:
        """The eval-mode BatchNorm as scale and shift per channel: y = scale·x + shift (None without one)."""
        bn = self.norm
        if bn is None:
            return None
        scale = torch.rsqrt(bn.running_var + bn.eps)
        shift = -bn.running_mean * scale
        if bn.affine:
            scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
        return scale, shift


class OperatorMixin:
    """Protocol methods shared by `ConvOperator` and the plain `conv` baseline (an nn.Conv2d subclass)."""

    # Set by from_conv: relative Frobenius error of the fitted dense kernel (0.0 when exact).
    fit_error: float | None = None
    # Whether from_conv recovers exactly every conv the operator can represent (closed-form fits); False
    # for operators fitted by gradient descent (`ConvOperator.fit_kernel`).
    from_conv_exact: ClassVar[bool] = True
    # Whether dense_weight() is exact for the forward in training mode too (False with a BatchNorm inside).
    linear_in_train: ClassVar[bool] = True
    # Whether torch.jit.script compiles the operator as trained (every deploy form scripts; docs/deploy.md).
    # tests/test_hostile.py checks this flag both ways for every registered operator.
    scriptable: ClassVar[bool] = False
    # The options `factorconv tune` searches, with their ranges (ops/space.py); every registered operator
    # declares its own ({} for none worth searching), and tests/test_tune.py names one that does not.
    search_space: ClassVar[dict[str, Any] | None] = None

    @classmethod
    def example_config(cls, draw: Draw, shape: ExampleShape) -> tuple[ExampleShape, dict[str, Any]]:
        """A valid configuration for the property tests (`factorconv.ops.examples`): `shape` adjusted where the
        operator constrains it, and its own options drawn with `draw`. Default: the shape as it is, no options."""
        return shape, {}

    @property
    def spec(self) -> ConvSpec:
        return ConvSpec.of(self)

    def dense_weight(self) -> Tensor:
        """The equivalent conv kernel (out_channels, in_channels/groups, kh, kw)."""
        raise NotImplementedError

    def dense_bias(self) -> Tensor | None:
        """The equivalent conv bias (None when there is none)."""
        return self.bias

    def cost(self, in_hw: tuple[int, int]) -> Cost:
        """Closed-form costs for an input of spatial size `in_hw` at batch 1."""
        raise NotImplementedError

    def storage_bits(self) -> dict[str, int]:
        """Storage bits of own parameters that are not stored at their dtype's width (e.g. binary masks)."""
        return {}

    def fold(self) -> nn.Conv2d:
        """The exact equivalent plain nn.Conv2d (eval-mode semantics for operators with a BatchNorm)."""
        spec = self.spec
        with torch.no_grad():
            weight = self.dense_weight().detach()
            bias = self.dense_bias()
            conv = nn.Conv2d(
                spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding,
                spec.dilation, spec.groups, bias=bias is not None, device=weight.device, dtype=weight.dtype,
            )
            conv.weight.copy_(weight)
            if bias is not None:
                conv.bias.copy_(bias.detach())
        conv.train(self.training)
        return conv

    # -- the deploy form: one rule for every operator -------------------------------------------------------
    def factorized_size(self) -> tuple[int, int] | None:
        """Optional hook: (params, bits) of the operator's factorized deploy form; None when it has none."""
        return None

    def factorized_deploy(self) -> nn.Module:
        """Optional hook, with factorized_size: the factorized deploy form as plain modules."""
        raise NotImplementedError(f"{type(self).__name__} has no factorized deploy form")

    def folded_size(self) -> tuple[int, int]:
        """(params, bits) of fold(): the dense kernel, and a bias when the equivalent conv has one."""
        params = self.spec.weight_numel + (self.out_channels if self.dense_bias() is not None else 0)
        return params, params * float_bits(self)

    def ships_factorized(self) -> bool:
        """The deploy rule: the factorized form where it is stored in fewer bits than the dense fold."""
        size = self.factorized_size()
        return size is not None and size[1] < self.folded_size()[1]

    def deploy(self) -> nn.Module:
        """The form to ship: the factorized form where `ships_factorized()`, else the folded conv."""
        return self.factorized_deploy() if self.ships_factorized() else self.fold()

    def deploy_cost(self, in_hw: tuple[int, int], factorized_macs: int,
                    factorized_adds: int = 0) -> tuple[int, int, int, int]:
        """(params, bits, MACs, adds) of what deploy() returns, decided by the same rule; the caller gives the
        factorized form's MACs and additions (the folded conv's are the spec's MACs and none)."""
        if self.ships_factorized():
            params, bits = self.factorized_size()
            return params, bits, factorized_macs, factorized_adds
        params, bits = self.folded_size()
        return params, bits, self.spec.macs(in_hw), 0

    @classmethod
    def from_conv(cls, conv: nn.Module, **options: Any) -> OperatorMixin:
        """An operator with `conv`'s configuration, initialised from its weights (see `load_from_conv`)."""
        spec = ConvSpec.of(conv)
        op = cls(spec.in_channels, spec.out_channels, spec.kernel_size, **spec.kwargs(), **options)
        weight = conv.dense_weight() if is_operator(conv) else conv.weight
        bias = conv.dense_bias() if is_operator(conv) else conv.bias
        op.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            op.fit_error = op.load_from_conv(weight.detach(), None if bias is None else bias.detach())
        return op

    def load_from_conv(self, weight: Tensor, bias: Tensor | None) -> float:
        """Set own parameters to represent `weight`/`bias`; return the relative fit error of the kernel."""
        raise NotImplementedError(f"{type(self).__name__} does not implement from_conv")

    def reset_like_conv(self, init: Callable[[Tensor], object]) -> bool:
        """Re-initialise so that the operator starts as the conv `init` would initialise, where that is
        meaningful (operators that reparametrise any conv exactly); returns whether it did.

        Backbones call this with their conv initialisation, so that swapping a conv for such an operator
        is the only difference between two models (the DO-Conv paper's comparison protocol).
        """
        return False

    def kernel_error(self, weight: Tensor) -> float:
        """The relative (Frobenius) error of this operator's dense kernel against `weight`: what
        `load_from_conv` returns after setting the parameters (nan on the meta device)."""
        if weight.is_meta:  # counting on the meta device: there are no values to compare
            return float("nan")
        fitted = self.dense_weight().detach()
        return float((fitted - weight).norm() / weight.norm().clamp_min(1e-30))


class ConvOperator(OperatorMixin, nn.Module):
    """Base class of operators with their own parameters (docs/operators.md walks through writing one).

    Required of a subclass (what the protocol cannot derive):
      `__init__(in, out, kernel_size, stride, padding, dilation, groups, bias, *, <options>, path="auto")`
          calling super().__init__ first (it validates the nn.Conv2d arguments into pairs);
      `dense_weight()` the equivalent kernel (out, in/groups, kh, kw), differentiable and contiguous;
      `cost(in_hw)` closed-form `Cost` at batch 1 (`spec.dense_cost` for a folded deploy form).
    Optional hooks, with their defaults here or in OperatorMixin:
      `load_from_conv(w, b) -> relative error` for from_conv (a closed form, or `self.fit_kernel(w)`
          with `from_conv_exact = False`); `dense_bias()` the layer's bias; `reset_like_conv(init)`
          initialise as the backbone would a plain conv; `factorized_size()` and `factorized_deploy()` a
          factorized deploy form, which deploy() ships where it is smaller than the fold (`deploy_cost` gives
          `cost` the same decision);
          `storage_bits()` bits of parameters stored narrower than their dtype (binary configurations);
      `has_feature_path = True` with `feature_forward(x)` and `feature_macs(in_hw)`: the operator can run
          as its factors, and the path is chosen by MACs against the kernel path (`kernel_macs`,
          `compose_macs` when composing the kernel costs notably) scaled by `feature_path_margin`
          (ops/speed.py);
      `forward_kernel()` the kernel the kernel path runs (default dense_weight(); a grouped operator returns
          its grouped weight), `kernel_conv(x, kernel)` the conv it runs with it (default the layer's conv
          with dense_bias(); ACDC-g runs its grouped conv with gathers) and `kernel_inputs()` every tensor
          that kernel depends on (for the eval cache);
      `after_optimizer_step()` called by the trainer after each update (BDSC clamps its latent there);
      class flags `from_conv_exact`, `linear_in_train`.
    The eval cache, the path choice, layouts and unbatched inputs are handled here.
    """

    has_feature_path: ClassVar[bool] = False
    # how many times fewer MACs the feature path must need; 1.0 for operators whose factors are dense convs
    feature_path_margin: ClassVar[float] = FEATURE_PATH_MARGIN
    # Python-side state TorchScript must not try to compile (a scripted operator composes its kernel).
    __jit_ignored_attributes__: ClassVar[list[str]] = ["_spec", "_cache", "_path_memo", "_fast", "_dims"]
    __jit_unused_properties__: ClassVar[list[str]] = ["spec", "linear_in_train"]

    @property
    def spec(self) -> ConvSpec:
        return self._spec

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        path: str = "auto",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        spec = ConvSpec.make(name, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        if path not in PATHS:
            raise ValueError(f"{name}: path must be one of {', '.join(PATHS)}, got {path!r}")
        if path == "feature" and not self.has_feature_path:
            raise ValueError(f"{name}: path='feature' is not available (this operator only composes kernels)")
        self.in_channels = spec.in_channels
        self.out_channels = spec.out_channels
        self.kernel_size = spec.kernel_size
        self.stride = spec.stride
        self.padding = spec.padding
        self.dilation = spec.dilation
        self.groups = spec.groups
        self.path = path
        self._spec = spec
        if spec.bias:
            self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        else:
            self.register_parameter("bias", None)
        # (the tensors the kernel was composed from, their versions, the kernel), filled in eval mode
        self._cache: tuple[tuple[Tensor, ...], list[int], Tensor] | None = None
        self._path_memo: dict[tuple[int, int, int, bool], str] = {}
        # Eval fast path of a leaf operator: (tensors, versions, (input shape, strides), kernel, bias) of the
        # last call that took the cached-kernel path; see _eager_forward.
        self._fast: tuple[tuple[Tensor, ...], list[int], tuple[Any, ...], Tensor, Tensor | None] | None = None

    # -- kernel composition -------------------------------------------------------------------------
    def compose_macs(self) -> int:
        """MACs to compose the dense kernel once (amortised over a batch, zero when cached)."""
        return 0

    def kernel_macs(self, in_hw: tuple[int, int]) -> int:
        """MACs of one sample through the conv the kernel path runs (the dense fold by default)."""
        return self.spec.macs(in_hw)

    def feature_macs(self, in_hw: tuple[int, int]) -> int:
        """MACs of one sample through the feature-composition chain."""
        raise NotImplementedError

    def feature_forward(self, x: Tensor) -> Tensor:
        """The forward as a chain of the operator's factors."""
        raise NotImplementedError

    def forward_kernel(self) -> Tensor:
        """The kernel the kernel path convolves with (and caches in eval): dense_weight() by default;
        operators that run a grouped conv rather than their dense fold return that conv's weight."""
        return self.dense_weight()

    def kernel_conv(self, x: Tensor, kernel: Tensor) -> Tensor:
        """The kernel path's convolution of `x` with `kernel`, a `forward_kernel()` (cached in eval): the
        layer's conv with the dense bias by default; operators whose forward kernel is a grouped conv's
        weight run that conv with their gathers here."""
        return F.conv2d(x, kernel, self.dense_bias(), self.stride, self.padding, self.dilation, self.groups)

    def kernel_inputs(self) -> tuple[Tensor, ...]:
        """Every parameter and buffer the composed kernel depends on."""
        if self._modules:
            return (*self.parameters(), *self.buffers())
        # a leaf operator: its own dicts, much cheaper than the recursive generators (this runs per call)
        return tuple(t for t in (*self._parameters.values(), *self._buffers.values()) if t is not None)

    def _kernel_cacheable(self) -> bool:
        if self.training or torch.compiler.is_compiling():
            return False
        return not (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()))

    def composed_kernel(self, memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
        """dense_weight(), cached in eval mode until a parameter or buffer changes, in `memory_format`
        (channels_last for channels_last inputs: the conv would otherwise reorder the kernel every call).

        The cache is valid while the same tensor objects are there at the same `_version` (every in-place
        update bumps it: optimizer steps, load_state_dict); `.to()`/`.half()`/... clear it in `_apply`.
        """
        if not self._kernel_cacheable():
            if self._cache is not None:  # (nn.Module.__setattr__ is slow: only when there is something to drop)
                self._cache = None
            return self.forward_kernel()
        inputs = self.kernel_inputs()
        cache = self._cache
        if (
            cache is None
            or len(cache[0]) != len(inputs)
            or not all(a is b for a, b in zip(cache[0], inputs, strict=True))
            or cache[1] != [t._version for t in inputs]
        ):
            kernel = compose_for_cache(
                lambda: in_layout(self.forward_kernel(), memory_format), inputs[0].device if inputs else None
            )
            cache = self._cache = (inputs, [t._version for t in inputs], kernel)
        elif cache[2].stride() != dense_strides(cache[2].shape, memory_format):
            kernel = compose_for_cache(lambda: in_layout(cache[2], memory_format), None)
            cache = self._cache = (cache[0], cache[1], kernel)
        return cache[2]

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> ConvOperator:
        self._cache = self._fast = None  # moved or converted tensors: the cached kernel is stale
        return super()._apply(fn, *args, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_fast" in self.__dict__ and isinstance(value, Tensor | nn.Module):
            self.__dict__["_fast"] = None  # a replaced parameter/buffer/submodule (assign=True loads, ...)
        super().__setattr__(name, value)

    def choose_path(self, x: Tensor, cached: bool | None = None) -> str:
        """'kernel' or 'feature' for this input: the forced `path`, else by MACs, the feature path needing
        FEATURE_PATH_MARGIN times fewer (`cached`: whether the kernel path would use the cached kernel;
        default: as now)."""
        if self.path != "auto":
            return self.path
        if not self.has_feature_path:
            return "kernel"
        if cached is None:
            cached = self._kernel_cacheable()
        key = (x.shape[0], x.shape[-2], x.shape[-1], cached)
        choice = self._path_memo.get(key)
        if choice is None:  # the cost model is pure Python arithmetic: decide once per input shape
            batch, in_hw = key[0], (key[1], key[2])
            kernel = (0 if cached else self.compose_macs()) + batch * self.kernel_macs(in_hw)
            feature = batch * self.feature_macs(in_hw)
            margin = self.feature_path_margin
            choice = self._path_memo[key] = "feature" if feature * margin < kernel else "kernel"
        return choice

    def train(self, mode: bool = True) -> ConvOperator:
        self._cache = self._fast = None
        return super().train(mode)

    def _conv(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.conv2d(x, weight, self.dense_bias(), self.stride, self.padding, self.dilation, self.groups)

    def fit_kernel(self, weight: Tensor, steps: int = 400, lr: float = 0.05) -> float:
        """Fit the parameters to `weight` by gradient descent (`factorconv.ops.fitting.fit_kernel`); returns
        the relative error of the best iterate. For factorizations without a closed-form fit."""
        return fit_kernel(self, weight, steps, lr)

    @torch.jit.unused
    def _eager_forward(self, x: Tensor) -> Tensor:
        # Inference of a leaf operator, same input shape as last time, nothing changed since: one version
        # check and the conv. Small-batch inference is bound by Python overhead, and every line run here
        # runs with caches the previous conv has just flushed.
        fast = self._fast
        if (
            fast is not None
            and (x.shape, x.stride()) == fast[2]  # the path depends on the shape, the kernel's layout on strides
            and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
            and [t._version for t in fast[0]] == fast[1]
        ):
            return F.conv2d(x, fast[3], fast[4], self.stride, self.padding, self.dilation, self.groups)
        cacheable = self._kernel_cacheable()
        if self.choose_path(x, cacheable) == "feature":
            return self.feature_forward(x)
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        if not cacheable:  # training: compose afresh, differentiably
            if self._cache is not None:
                self._cache = None
            kernel = self.forward_kernel()
            if not channels_last:  # (a channels_last input takes either layout; see in_layout)
                kernel = in_layout(kernel, layout)
            return self.kernel_conv(x, kernel)
        kernel = self.composed_kernel(layout)
        if type(self).kernel_conv is not ConvOperator.kernel_conv:
            return self.kernel_conv(x, kernel)
        bias = self.dense_bias()
        if self._cache is not None and not self._modules and not torch.is_grad_enabled():
            tensors, versions, _ = self._cache
            self._fast = (tensors, versions, (x.shape, x.stride()), kernel, None if bias is None else bias.detach())
        return F.conv2d(x, kernel, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        # the input nn.Conv2d takes, (N, C, H, W) or unbatched (C, H, W), checked here so that a wrong one is
        # reported in the layer's own terms, not those of a factor inside it
        if x.dim() not in (3, 4) or x.size(-3) != self.in_channels:
            if torch.jit.is_scripting():
                raise RuntimeError("expected an input of shape (N, C, H, W) or (C, H, W) with C = " +
                                   str(self.in_channels))
            raise RuntimeError(self._input_error(x))
        if x.dim() == 3:
            return self._forward_batched(x.unsqueeze(0)).squeeze(0)
        return self._forward_batched(x)

    @torch.jit.unused
    def _input_error(self, x: Tensor) -> str:
        return (f"{type(self).__name__}: expected an input of shape (N, {self.in_channels}, H, W) or "
                f"({self.in_channels}, H, W), got {tuple(x.shape)}")

    def _forward_batched(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._conv(x, self.dense_weight())
        else:
            return self._eager_forward(x)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}"
        )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.path != "auto":
            s += f", path={self.path!r}"
        return s
