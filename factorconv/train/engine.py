"""The training engine: `fit(config)` trains one model on one data set as the config says, single-process or
under torchrun (DDP), and `evaluate_checkpoint(path)` scores a saved run.

What a step does, in order: set the step's learning rate; forward (autocast when AMP is on); all-reduce the
loss/accuracy sums and a non-finite flag (one small collective, so every rank stops together); stop with
TrainError on a non-finite loss, before the bad update and without checkpointing; backward, optional
gradient clipping, optimizer step; then `after_optimizer_step()` on every module that has one (BDSC clamps
its latent configuration there). Checkpoints (rank 0) hold everything a bit-exact resume needs: model,
optimizer, grad scaler, step, epoch and batch position, RNG states and the epoch's running sums; the data
order and augmentation are functions of (seed, epoch, batch), so they need no state.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..accounting import check_memory, count_params, profile
from ..data import Augment, DatasetError, ImageSet, TensorLoader, load_dataset
from ..registry import create_model
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig, apply_overrides, load_config_file
from .distributed import DistContext, all_reduce_sum, broadcast_buffers, init_distributed, shutdown_distributed
from .health import DIVERGED, LossTrace, assess
from .presets import preset_values
from .progress import Progress
from .rundir import RunDir, RunDirError, environment
from .schedule import lr_at

__all__ = [
    "RESUME_SAFE_FIELDS",
    "Callback",
    "DivergedError",
    "TrainError",
    "Trainer",
    "build_model",
    "evaluate_checkpoint",
    "evaluate_model",
    "fit",
    "load_trained",
    "resolve_config",
]

Callback = Callable[[str, dict[str, Any]], None]

# The test subset is the same images whatever the run's seed: runs of different seeds (and operators) are
# scored on the same images, so the seed-to-seed spread is training noise alone, not test-sampling noise.
TEST_SUBSET_SEED = 0

# Fields a resumed run may change without changing what it computes up to the checkpoint.
RESUME_SAFE_FIELDS = frozenset({"epochs", "steps", "run_dir", "eval_every", "checkpoint_every", "log_every",
                                "progress", "threads", "data_dir", "download", "device"})


class TrainError(RuntimeError):
    """Training cannot go on (a non-finite loss, an unusable run directory or checkpoint); the message says
    what happened and where the last good state is."""


class DivergedError(TrainError):
    """The loss (or the weights, or the gradient norm) became non-finite: the run stopped before that update
    and wrote a result.json with status "diverged" (`result` holds it)."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def resolve_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> TrainConfig:
    """TrainConfig defaults <- `base` <- the preset <- the config file <- `overrides` (dotted keys allowed).

    The preset is `preset` or the config file's "preset" field; a `base` (e.g. a saved run's config) is
    complete already, and its "preset" field only records where it came from."""
    values: dict[str, Any] = dict(base or {})
    file_values = load_config_file(config_file) if config_file else {}
    preset = preset or file_values.get("preset")
    if preset:
        values = apply_overrides(values, preset_values(preset))
    values = apply_overrides(values, file_values)
    values = apply_overrides(values, overrides or {})
    return TrainConfig.from_dict(values).validate()


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int) -> nn.Module:
    return create_model(cfg.model, conv=cfg.conv, width=cfg.width, num_classes=num_classes, in_chans=in_chans,
                        conv_kwargs=cfg.conv_kwargs, **cfg.model_kwargs)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (CUDA with bf16; CPUs with AMX-BF16 or AVX512-BF16), so
    autocasting to it is faster rather than emulated."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        caps = torch.cpu.get_capabilities()
        return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))
    except Exception:  # older torch without the capability query
        return False


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """auto: CUDA only (bf16 where supported, else fp16); native: bf16 where the hardware runs it natively."""
    if cfg.amp == "native":
        return torch.bfloat16 if native_bf16(device) else None
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if cfg.amp == "fp16":
        if device.type != "cuda":
            raise ValueError("config field 'amp' = 'fp16' needs CUDA; use 'bf16' or 'off' on CPU")
        return torch.float16
    if cfg.amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _default_run_dir(cfg: TrainConfig) -> str:
    parts = [cfg.model] + ([cfg.conv] if cfg.conv else []) + [cfg.data, datetime.now().strftime("%Y%m%d-%H%M%S")]
    return str(Path("runs") / "-".join(parts))


def evaluate_model(model: nn.Module, loader: TensorLoader, ctx: DistContext | None = None,
                   amp: torch.dtype | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` (eval mode) over `loader`, summed over ranks under DDP
    (every rank evaluates rank 0's BatchNorm statistics)."""
    ctx = ctx or DistContext(0, 1, 0, 1, loader.device)
    net = _unwrap(model)
    broadcast_buffers(net, ctx)
    was_training = net.training
    net.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    with torch.no_grad(), _autocast(ctx.device, amp):
        for x, y in loader.epoch(0):
            if not len(y):
                continue
            out = net(x).float()
            sums[0] += F.cross_entropy(out, y, reduction="sum").double()
            sums[1] += (out.argmax(1) == y).sum().double()
            sums[2] += len(y)
    net.train(was_training)
    total = all_reduce_sum(sums, ctx).tolist()
    return total[0] / max(total[2], 1), total[1] / max(total[2], 1)


class Trainer:
    """One training run. `fit()` returns the result dict also written to result.json; afterwards `model`
    is the trained (unwrapped) model."""

    def __init__(self, config: TrainConfig, *, resume: bool = False, callbacks: Sequence[Callback] = ()) -> None:
        self.cfg = config.validate()
        if self.cfg.run_dir is None:
            self.cfg.run_dir = _default_run_dir(self.cfg)
        self.resume = resume
        self.callbacks = list(callbacks)
        self.run = RunDir(self.cfg.run_dir)
        self.model: nn.Module | None = None

    # -- setup ---------------------------------------------------------------------------------------

    def _agree(self, ctx: DistContext, error: Exception | None) -> None:
        """Raise on every rank when any rank failed (so no rank waits forever in a collective)."""
        if ctx.distributed:
            flag = all_reduce_sum(torch.tensor([1.0 if error else 0.0], device=ctx.device), ctx)
            if flag.item() and error is None:
                raise TrainError("another rank failed during setup (see its message)")
        if error is not None:
            raise error

    def _load_data(self, ctx: DistContext) -> tuple[ImageSet, ImageSet]:
        cfg = self.cfg

        def load() -> tuple[ImageSet, ImageSet]:
            train = load_dataset(cfg.data, "train", cfg.data_dir, cfg.download, cfg.data_verify, cfg.image_size)
            test = load_dataset(cfg.data, "test", cfg.data_dir, False, cfg.data_verify, cfg.image_size)
            if train.images.shape[1:] != test.images.shape[1:] or train.num_classes != test.num_classes:
                raise DatasetError(f"{cfg.data}: train images {tuple(train.images.shape[1:])} with "
                                   f"{train.num_classes} classes but test {tuple(test.images.shape[1:])} with "
                                   f"{test.num_classes}")
            return train, test

        result, error = None, None
        if ctx.is_main:  # rank 0 first: it may download
            try:
                result = load()
            except (DatasetError, ValueError, OSError) as err:
                error = err
        self._agree(ctx, error)
        if result is None:
            result = load()
        return result

    def _state(self, model: nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               progress: dict[str, Any]) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"model": _unwrap(model).state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                "rng": rng, "config": self.cfg.to_dict(), **progress}

    def _check_resume(self, saved: dict[str, Any]) -> None:
        for key, value in saved.items():
            if key not in RESUME_SAFE_FIELDS and getattr(self.cfg, key, value) != value:
                raise TrainError(f"cannot resume {self.run.path} with {key}={getattr(self.cfg, key)!r}: the run was "
                                 f"trained with {value!r}, and changing it would not continue the same run "
                                 f"(resumable changes: {', '.join(sorted(RESUME_SAFE_FIELDS))})")

    # -- loop ----------------------------------------------------------------------------------------

    def _emit(self, event: str, info: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb(event, {**info, "trainer": self})

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        ctx = init_distributed(cfg.device)
        threads = torch.get_num_threads()
        deterministic = torch.are_deterministic_algorithms_enabled()
        try:
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
            elif ctx.distributed and ctx.device.type == "cpu":
                torch.set_num_threads(max(1, (torch.multiprocessing.cpu_count() or 1) // ctx.local_world_size))
            if cfg.deterministic:
                torch.use_deterministic_algorithms(True, warn_only=True)
            return self._fit(ctx)
        except KeyboardInterrupt as err:  # checkpoints are atomic: the last one is whole; say how to go on
            ckpt = self.run.checkpoint
            err.resume_hint = (f"the last checkpoint, {ckpt}, is intact: continue with `factorconv train --resume "
                               f"{self.run.path}`" if ckpt.exists() else "no checkpoint had been written yet")
            raise
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)
            shutdown_distributed(ctx)

    def _fit(self, ctx: DistContext) -> dict[str, Any]:
        cfg = self.cfg
        t_start = time.perf_counter()
        error: Exception | None = None
        if ctx.is_main:
            try:
                self.run.prepare(self.resume)
            except RunDirError as err:
                error = TrainError(str(err))
        self._agree(ctx, error)

        saved = None
        if self.resume:
            try:
                saved = load_checkpoint(self.run.checkpoint)
            except CheckpointError as err:
                raise TrainError(str(err)) from None
            self._check_resume(saved["config"])

        train_set, test_set = self._load_data(ctx)
        mean, std = (saved["mean"], saved["std"]) if saved else train_set.mean_std()
        train_set = train_set.subset(cfg.train_subset, cfg.seed)
        test_set = test_set.subset(cfg.test_subset, TEST_SUBSET_SEED)
        device = ctx.device
        amp = _amp_dtype(cfg, device)
        channels_last = cfg.channels_last if cfg.channels_last is not None else (device.type == "cpu" or
                                                                                  amp is not None)
        train_loader = TensorLoader(train_set, cfg.batch_size, shuffle=True,
                                    augment=Augment(cfg.augment_pad, cfg.augment_flip), mean=mean, std=std,
                                    seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size, device=device,
                                    channels_last=channels_last)
        eval_batch = max(cfg.batch_size, 256) // ctx.world_size * ctx.world_size
        test_loader = TensorLoader(test_set, eval_batch, shuffle=False, mean=mean, std=std, rank=ctx.rank,
                                   world_size=ctx.world_size, device=device, channels_last=channels_last)
        steps_per_epoch = len(train_loader)
        if steps_per_epoch == 0:
            raise TrainError(f"{len(train_set)} training images make no batch of {cfg.batch_size}; lower batch_size")
        total = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * steps_per_epoch))

        if device.type == "cpu":  # count on meta first: a model too large to train is an error, not a crash
            with torch.device("meta"):
                counted = build_model(cfg, train_set.num_classes, train_set.channels)
            check_memory(count_params(counted), 4, f"{cfg.model} (conv={cfg.conv}, width={cfg.width})")
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, train_set.num_classes, train_set.channels).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.sync_bn:
            if device.type != "cuda":
                raise ValueError("config field 'sync_bn' = true needs CUDA (SyncBatchNorm has no CPU kernel)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = _unwrap(model)
        hooks = [m for m in net.modules() if callable(getattr(m, "after_optimizer_step", None))]
        if ctx.distributed:
            model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                              weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

        step, epoch, batch = 0, 0, 0
        sums = [0.0, 0.0, 0.0]  # this epoch's loss sum, correct, count
        train_seconds, seconds_before = 0.0, 0.0
        best = {"test_acc": None, "epoch": None}
        last_eval: dict[str, float | None] = {"test_loss": None, "test_acc": None}
        trace = LossTrace(total, saved.get("loss_trace") if saved else None)
        record: dict[str, Any] = dict(saved.get("last_record") or {}) if saved else {}
        if saved is not None:
            net.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            scaler.load_state_dict(saved["scaler"])
            torch.set_rng_state(saved["rng"]["torch"])
            if "cuda" in saved["rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
            step, epoch, batch = saved["step"], saved["epoch"], saved["batch"]
            sums = list(saved["sums"])
            train_seconds, seconds_before = saved["train_seconds"], saved["seconds"]
            best, last_eval = dict(saved["best"]), dict(saved["last_eval"])
            if step > total:
                raise TrainError(f"{self.run.path} is at step {step}, past the {total} steps asked for; a run cannot "
                                 f"be shortened: resume it with at least {step} steps, or train a new run")
            if ctx.is_main:
                self.run.truncate_metrics(step)
        if ctx.is_main:
            self.run.write("config.json", {**cfg.to_dict(), "mean": mean, "std": std,
                                           "classes": train_set.classes, "input_size": list(train_set.images.shape[1:]),
                                           "world_size": ctx.world_size})
        self.model = net

        progress = Progress(cfg.progress, total, step, cfg.log_every, enabled=ctx.is_main)
        if ctx.is_main:
            what = f"{cfg.model}" + (f" conv={cfg.conv}" if cfg.conv else "") + (
                f" width={cfg.width}" if cfg.width else "")
            progress.write(f"training {what} on {cfg.data} ({len(train_set)} train / {len(test_set)} test images, "
                           f"{steps_per_epoch} steps/epoch, {total} steps, batch {cfg.batch_size}"
                           f"{f' on {ctx.world_size} ranks' if ctx.distributed else ''}, {device}"
                           f"{', channels_last' if channels_last else ''}{f', amp {amp}' if amp else ''}) "
                           f"-> {self.run.path}" + (f" (resumed at step {step})" if saved else ""))

        def summary(status: str, health: dict[str, Any]) -> dict[str, Any]:
            prof = profile(net, tuple(train_set.images.shape[1:]))
            return {
                "status": status, "run_dir": str(self.run.path), "model": cfg.model, "conv": cfg.conv,
                "width": cfg.width, "data": cfg.data, "preset": cfg.preset, "health": health,
                "loss_trace": trace.finished(), "steps": step, "epochs": step / steps_per_epoch,
                "train_seconds": train_seconds, "seconds": seconds_before + time.perf_counter() - t_start,
                "world_size": ctx.world_size, "device": str(device), "amp": str(amp) if amp else None,
                "channels_last": channels_last,
                "profile": {k: getattr(prof, k) for k in ("params", "param_bits", "buffers", "macs", "deploy_params",
                                                          "deploy_macs", "size_bytes")},
                "config": cfg.to_dict(), "environment": environment(),
            }

        def diverged(message: str) -> DivergedError:
            """The error to raise for a non-finite loss, weight or gradient, after recording the run as
            diverged in result.json (a study then reports it instead of training it again)."""
            result = summary(DIVERGED, assess((), nonfinite=True) | {"reason": message})
            result.update(test_loss=None, test_acc=None, train_loss=None, train_acc=None)
            if ctx.is_main:
                self.run.write("result.json", result)
            return DivergedError(message, result)

        def checkpoint() -> None:
            if not ctx.is_main:
                return
            broken = next((n for n, t in net.state_dict().items()
                           if t.is_floating_point() and not torch.isfinite(t).all()), None)
            if broken is not None:  # a finite loss can still come with an update that overflowed the weights
                progress.close()
                raise diverged(f"{broken} became NaN/inf by step {step}; this state was not saved; "
                               + self._last_good())
            state = self._state(model, opt, scaler, {
                "step": step, "epoch": epoch, "batch": batch, "sums": sums, "train_seconds": train_seconds,
                "seconds": seconds_before + time.perf_counter() - t_start, "best": best, "last_eval": last_eval,
                "mean": mean, "std": std, "loss_trace": trace.state_dict(), "last_record": record})
            try:
                save_checkpoint(state, self.run.checkpoint)
            except CheckpointError as err:
                raise TrainError(str(err)) from None
            self._emit("checkpoint", {"step": step, "epoch": epoch, "batch": batch})

        model.train()
        criterion_smoothing = cfg.label_smoothing
        while step < total:
            t_epoch = time.perf_counter()
            for x, y in train_loader.epoch(epoch, batch):
                lr = lr_at(cfg, step, steps_per_epoch, total)
                for group in opt.param_groups:
                    group["lr"] = lr
                with _autocast(device, amp):
                    out = model(x)
                    loss = F.cross_entropy(out.float(), y, label_smoothing=criterion_smoothing)
                stats = torch.stack([loss.detach().double() * len(y), (out.argmax(1) == y).sum().double(),
                                     torch.tensor(len(y), dtype=torch.float64, device=device),
                                     (~torch.isfinite(loss.detach())).double()])
                stats = all_reduce_sum(stats, ctx).tolist()
                if stats[3]:
                    progress.close()
                    raise diverged(self._nonfinite_message(step, epoch))
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    scaler.unscale_(opt)
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    if not torch.isfinite(norm) and amp != torch.float16:
                        progress.close()
                        raise diverged(self._nonfinite_message(step, epoch, "gradient norm"))
                scaler.step(opt)
                scaler.update()
                with torch.no_grad():
                    for m in hooks:
                        m.after_optimizer_step()
                step += 1
                batch += 1
                trace.add(stats[0] / stats[2])
                sums = [sums[0] + stats[0], sums[1] + stats[1], sums[2] + stats[2]]
                loss_avg, acc_avg = sums[0] / sums[2], sums[1] / sums[2]
                progress.step(step, epoch, loss_avg, acc_avg, lr)
                if ctx.is_main and step % cfg.log_every == 0:
                    self.run.append_metrics({"kind": "step", "step": step, "epoch": epoch + batch / steps_per_epoch,
                                             "train_loss": loss_avg, "train_acc": acc_avg, "lr": lr})
                self._emit("step", {"step": step, "epoch": epoch, "batch": batch, "loss": stats[0] / stats[2]})
                if step >= total:
                    break
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and batch < steps_per_epoch:
                    train_seconds += time.perf_counter() - t_epoch
                    checkpoint()
                    t_epoch = time.perf_counter()
            train_seconds += time.perf_counter() - t_epoch
            epoch_done = batch >= steps_per_epoch
            finished = step >= total
            record = {"kind": "epoch", "step": step, "epoch": epoch + batch / steps_per_epoch,
                      "train_loss": sums[0] / max(sums[2], 1), "train_acc": sums[1] / max(sums[2], 1),
                      "lr": lr_at(cfg, step - 1, steps_per_epoch, total)}
            if finished or (epoch_done and cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
                test_loss, test_acc = evaluate_model(model, test_loader, ctx, amp)
                last_eval = {"test_loss": test_loss, "test_acc": test_acc}
                record.update(last_eval)
                if best["test_acc"] is None or test_acc > best["test_acc"]:
                    best = {"test_acc": test_acc, "epoch": record["epoch"]}
            record.update(train_seconds=train_seconds, seconds=seconds_before + time.perf_counter() - t_start)
            if ctx.is_main:
                self.run.append_metrics(record)
                test = (f" | test loss {record['test_loss']:.4f} acc {100 * record['test_acc']:.2f}%"
                        if "test_acc" in record else "")
                progress.write(f"epoch {record['epoch']:.4g}: train loss {record['train_loss']:.4f} acc "
                               f"{100 * record['train_acc']:.2f}%{test} | {train_seconds:.0f} s training")
            self._emit("epoch", {"step": step, "epoch": epoch, "record": record})
            if epoch_done:
                epoch, batch, sums = epoch + 1, 0, [0.0, 0.0, 0.0]
            checkpoint()
        progress.close()

        if not record:  # resumed at the end of a run whose checkpoint predates the saved last record
            record = {"train_loss": sums[0] / max(sums[2], 1), "train_acc": sums[1] / max(sums[2], 1)}
        result = summary("done", assess(trace.finished()))
        result.update(**last_eval, best_test_acc=best["test_acc"], best_epoch=best["epoch"],
                      train_loss=record["train_loss"], train_acc=record["train_acc"])
        if ctx.is_main:
            self.run.write("result.json", result)
        self._emit("end", {"step": step, "result": result})
        return result

    def _last_good(self) -> str:
        ckpt = self.run.checkpoint
        if ckpt.exists():
            return (f"the last good checkpoint, {ckpt}, is intact; a run with a lower lr or with grad_clip set "
                    "avoids this")
        return "no checkpoint had been written yet; a run with a lower lr or with grad_clip set avoids this"

    def _nonfinite_message(self, step: int, epoch: int, what: str = "loss") -> str:
        return (f"the {what} became NaN/inf at step {step + 1} (epoch {epoch + 1}); stopped before applying that "
                f"update and did not save it; {self._last_good()}")


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device.type, dtype=dtype):
            yield


def fit(config: TrainConfig, *, resume: bool = False, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train as `config` says (see Trainer); returns the result dict written to result.json."""
    return Trainer(config, resume=resume, callbacks=callbacks).fit()


def load_trained(
    path: str | Path, data_dir: str | None = None
) -> tuple[nn.Module, TrainConfig, dict[str, Any], ImageSet]:
    """A saved run (a run directory or its checkpoint.pt) as (model in eval mode on the CPU, its config, the
    checkpoint, its test split restricted to the run's test subset)."""
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise TrainError(str(err)) from None
    try:
        cfg = TrainConfig.from_dict(state["config"]).validate()
    except (ValueError, TypeError) as err:
        raise TrainError(f"{path}: the checkpoint's config is not valid ({err})") from None
    if data_dir is not None:
        cfg.data_dir = data_dir
    test = load_dataset(cfg.data, "test", cfg.data_dir, False, cfg.data_verify, cfg.image_size)
    test = test.subset(cfg.test_subset, TEST_SUBSET_SEED)
    model = build_model(cfg, test.num_classes, test.channels)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise TrainError(f"{path}: the checkpoint's weights do not fit the model its config describes ({cfg.model}, "
                         f"conv={cfg.conv}, width={cfg.width}): {first}") from None
    for key in ("mean", "std"):
        if key not in state:
            raise TrainError(f"{path} is not a complete training checkpoint: it has no {key!r} (input normalisation)")
    return model.eval(), cfg, state, test


def evaluate_checkpoint(
    path: str | Path,
    data_dir: str | None = None,
    device: str = "auto",
    fold: bool = False,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Test loss and accuracy of a saved run (a run directory or its checkpoint.pt). With `fold`, also of the
    folded (deploy) model, and the largest logit difference between the two."""
    from ..convert import fold as fold_model

    model, cfg, state, test = load_trained(path, data_dir)
    ctx = init_distributed(device)
    loader = TensorLoader(test, batch_size, shuffle=False, mean=state["mean"], std=state["std"], device=ctx.device)
    model = model.to(ctx.device)
    loss, acc = evaluate_model(model, loader)
    result: dict[str, Any] = {"checkpoint": str(path), "model": cfg.model, "conv": cfg.conv, "data": cfg.data,
                              "step": state["step"], "test_loss": loss, "test_acc": acc, "images": len(test)}
    if fold:
        folded = fold_model(copy.deepcopy(model)).eval()
        f_loss, f_acc = evaluate_model(folded, loader)
        with torch.no_grad():
            x, _ = next(iter(loader.epoch(0)))
            diff = (model(x) - folded(x)).abs().max().item()
        result.update(folded_test_loss=f_loss, folded_test_acc=f_acc, folded_max_logit_diff=diff)
    return result

