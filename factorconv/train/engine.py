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
import fnmatch
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..accounting import check_memory, count_params, profile
from ..data import Augment, DatasetError, ImageSet, TensorLoader, load_dataset
from ..data.base import dataset_fingerprint, select_classes
from ..locking import remove_if_unused
from ..registry import create_model
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig, apply_overrides, load_config_file
from .distributed import DistContext, all_reduce_sum, broadcast_buffers, init_distributed, shutdown_distributed
from .health import DIVERGED, assess
from .presets import preset_values
from .progress import Progress
from .rundir import RUN_LOCK, RunDir, RunDirError, environment
from .schedule import lr_at
from .state import TrainState
from .task import SCORE_NAMES, Scores, check_scored, check_task, correct_and_count, task_loss
from .tensorboard import TensorBoardLog, tensorboard_available
from .transfer import load_initial_weights, select_trainable

__all__ = [
    "RESUME_SAFE_FIELDS",
    "Callback",
    "DivergedError",
    "PruneRun",
    "PrunedError",
    "TrainError",
    "Trainer",
    "build_model",
    "evaluate_checkpoint",
    "evaluate_model",
    "evaluate_scores",
    "fit",
    "load_trained",
    "resolve_config",
    "resume_config",
]

Callback = Callable[[str, dict[str, Any]], None]

# The test subset is the same images whatever the run's seed: runs of different seeds (and operators) are
# scored on the same images, so the seed-to-seed spread is training noise alone, not test-sampling noise.
TEST_SUBSET_SEED = 0

# The held-out validation split (config field `holdout`) is the same images whatever the run's seed, for the
# same reason: every trial of a tuning study is scored on the same images.
HOLDOUT_SEED = 0

# Fields a resumed run may change without changing what it computes up to the checkpoint.
RESUME_SAFE_FIELDS = frozenset({"epochs", "steps", "run_dir", "eval_every", "checkpoint_every", "log_every",
                                "progress", "threads", "data_dir", "download", "device", "log"})


class TrainError(RuntimeError):
    """Training cannot go on (a non-finite loss, an unusable run directory or checkpoint); the message says
    what happened and where the last good state is."""


class PruneRun(Exception):
    """Raised by a callback to end the run early because it is not worth finishing (a tuning trial whose
    validation score so far is below its pruner's bar): the run records status "pruned", `reason` and the
    `scores` the decision was made on."""

    def __init__(self, reason: str, scores: dict[str, float] | None = None) -> None:
        super().__init__(reason)
        self.reason, self.scores = reason, dict(scores or {})


class PrunedError(TrainError):
    """The run ended early at a callback's request (PruneRun) and wrote a result.json with status "pruned"
    (`result` holds it)."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


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


def resume_config(run: str | Path, changes: dict[str, Any] | None = None) -> TrainConfig:
    """The saved config of the run at `run` (its directory or checkpoint), with `changes` applied: only fields
    a resume may change (RESUME_SAFE_FIELDS), or values equal to the saved ones (a command line rerun with
    --resume added); anything else is a ValueError naming the fields."""
    changes = dict(changes or {})
    path = Path(run)
    saved = TrainConfig.from_dict(load_checkpoint(path)["config"]).to_dict()
    probe = resolve_config(None, None, changes, base=saved).to_dict() if changes else saved
    bad = sorted(k for k in changes if k.split(".")[0] not in RESUME_SAFE_FIELDS
                 and probe[k.split(".")[0]] != saved[k.split(".")[0]])
    if bad:
        raise ValueError(f"--resume continues the run with its saved config; it cannot change {', '.join(bad)} "
                         f"(resumable: {', '.join(sorted(RESUME_SAFE_FIELDS))})")
    saved["run_dir"] = str(path.parent if path.suffix == ".pt" else path)
    return resolve_config(None, None, changes, base=saved)


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int,
                input_size: tuple[int, ...] | None = None) -> nn.Module:
    """The model a config trains. With `conv_scope`, the model is built plain and `convert` puts the operator
    in the matching layers only (`input_size`, (C, H, W), for operators that look at the whole model)."""
    if cfg.conv_scope is None:
        return create_model(cfg.model, conv=cfg.conv, width=cfg.width, num_classes=num_classes, in_chans=in_chans,
                            conv_kwargs=cfg.conv_kwargs, **cfg.model_kwargs)
    from ..convert import convert

    model = create_model(cfg.model, width=cfg.width, num_classes=num_classes, in_chans=in_chans,
                         **cfg.model_kwargs)
    patterns = [p.strip() for p in cfg.conv_scope.split(",") if p.strip()]
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns):
        raise ValueError(f"config field 'conv_scope' = {cfg.conv_scope!r} matches no conv of {cfg.model} (its convs "
                         f"are named like {', '.join(names[:3])}, ...)")
    return convert(model, cfg.conv, conv_kwargs=cfg.conv_kwargs, include=patterns, input_size=input_size)


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


def evaluate_scores(model: nn.Module, loader: TensorLoader, ctx: DistContext | None = None,
                    amp: torch.dtype | None = None) -> dict[str, float]:
    """`model` (eval mode) over `loader`, summed over ranks under DDP (every rank evaluates rank 0's BatchNorm
    statistics): {"test_loss", "test_acc"}, test_acc being the task's score (top-1 accuracy; mean IoU for
    segmentation, with "test_pixel_acc" beside it)."""
    ctx = ctx or DistContext(0, 1, 0, 1, loader.device)
    net = _unwrap(model)
    broadcast_buffers(net, ctx)
    was_training = net.training
    net.eval()
    scores = Scores(loader.num_classes, loader.task == "segmentation", ctx.device)
    with torch.no_grad(), _autocast(ctx.device, amp):
        for x, y in loader.epoch(0):
            if len(y):
                scores.add(net(x).float(), y)
    net.train(was_training)
    return scores.result(all_reduce_sum(scores.sums, ctx))


def evaluate_model(model: nn.Module, loader: TensorLoader, ctx: DistContext | None = None,
                   amp: torch.dtype | None = None) -> tuple[float, float]:
    """(mean cross-entropy, score) of `model` over `loader`: `evaluate_scores`' test_loss and test_acc."""
    scores = evaluate_scores(model, loader, ctx, amp)
    return scores["test_loss"], scores["test_acc"]


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
        self.held = contextlib.ExitStack()  # what the run holds while it trains: its directory's lock
        self.tensorboard: TensorBoardLog | None = None  # with log = "tensorboard" (rank 0)
        if self.cfg.log == "tensorboard" and not tensorboard_available():
            raise ValueError("config field 'log' = 'tensorboard' needs TensorBoard: pip install "
                             "'factorconv[tensorboard]' (or pip install tensorboard)")
        self.data_fingerprint: str | None = None  # of the data it trains on (rank 0)
        self.saved_fingerprint: str | None = None  # of the data its checkpoint was trained on
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
                self._check_data(*result)
            except (DatasetError, ValueError, OSError) as err:
                error = err
        self._agree(ctx, error)
        if result is None:
            result = load()
        return result

    def _check_data(self, train: ImageSet, test: ImageSet) -> None:
        """Record the data's fingerprint; refuse data other than what the config (a study's run) or the
        checkpoint being resumed was made with."""
        self.data_fingerprint = dataset_fingerprint(train, test)
        expected = [(self.cfg.data_fingerprint, "the study it belongs to expects"),
                    (self.saved_fingerprint, "the checkpoint being resumed was trained on")]
        for fingerprint, whose in expected:
            if fingerprint is not None and fingerprint != self.data_fingerprint:
                where = self.cfg.data_dir or "its default place"
                raise DatasetError(f"{self.cfg.data} in {where} is not the data {whose} (fingerprint "
                                   f"{self.data_fingerprint}, expected {fingerprint}): the data set changed; "
                                   "train a new run (another --run-dir or --out) on it")

    def _check_resume(self, saved: dict[str, Any]) -> None:
        for key, value in saved.items():
            if key not in RESUME_SAFE_FIELDS and getattr(self.cfg, key, value) != value:
                raise TrainError(f"cannot resume {self.run.path} with {key}={getattr(self.cfg, key)!r}: the run was "
                                 f"trained with {value!r}, and changing it would not continue the same run "
                                 f"(resumable changes: {', '.join(sorted(RESUME_SAFE_FIELDS))})")

    # -- the run: setup, steps, epoch ends, checkpoints, finish ------------------------------------------

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
            try:
                self.setup(ctx)
            except BaseException:
                self._remove_if_never_used()
                raise
            try:
                while self.state.step < self.total:
                    self.train_epoch()
            except PruneRun as request:
                raise self._pruned(request.reason, request.scores) from None
            return self.finish()
        except KeyboardInterrupt as err:  # checkpoints are atomic: the last one is whole; say how to go on
            ckpt = self.run.checkpoint
            err.resume_hint = (f"the last checkpoint, {ckpt}, is intact: continue with `factorconv train --resume "
                               f"{self.run.path}`" if ckpt.exists() else "no checkpoint had been written yet")
            raise
        finally:
            self.held.close()  # the run's lock
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)
            shutdown_distributed(ctx)

    def setup(self, ctx: DistContext) -> None:
        """Prepare the run directory, the data, the model, optimizer and state (from the checkpoint when
        resuming), and write config.json: the steps below, in this order (the model's initialisation draws
        from the RNG after the data is loaded)."""
        self.ctx, self.t_start = ctx, time.perf_counter()
        self._claim_run_dir(ctx)
        saved = self._saved_state()
        train_set, test_set, mean, std = self._datasets(ctx, saved)
        self._loaders(ctx, train_set, test_set, mean, std)
        model, net = self._model(ctx, train_set, saved)
        self._optimizer()
        self._state(net, saved, mean, std)
        if ctx.is_main:
            self.run.write("config.json", {**self.cfg.to_dict(), "mean": mean, "std": std,
                                           "classes": train_set.classes, "input_size": list(self.input_size),
                                           "world_size": ctx.world_size})
        self.model = net
        if ctx.is_main and self.cfg.log == "tensorboard":
            self.tensorboard = TensorBoardLog(self.run.path, self.cfg.to_dict(), self.state.step if saved else None)
            self.held.callback(self.tensorboard.close)
        self._start_progress(ctx, len(train_set), len(test_set), resumed=saved is not None)
        model.train()

    def _remove_if_never_used(self) -> None:
        """A run refused during setup (an unknown model, missing data) leaves no directory behind when this
        call created it and nothing but its lock is in it."""
        if not getattr(self, "created_run_dir", False):
            return
        self.held.close()  # release the lock before removing it
        remove_if_unused(self.run.path, RUN_LOCK)

    def _claim_run_dir(self, ctx: DistContext) -> None:
        """Rank 0: create the run directory, take its lock, start its logs afresh for a new run."""
        error: Exception | None = None
        if ctx.is_main:
            self.created_run_dir = not self.run.path.exists()
            try:
                self.run.prepare(self.resume)
                self.held.enter_context(self.run.lock())
                if not self.resume:
                    self.run.start_fresh()
            except RunDirError as err:
                error = TrainError(str(err))
        self._agree(ctx, error)

    def _saved_state(self) -> dict[str, Any] | None:
        """The checkpoint being resumed (None for a new run), its config checked against this one."""
        saved = None
        if self.resume:
            try:
                saved = load_checkpoint(self.run.checkpoint)
            except CheckpointError as err:
                raise TrainError(str(err)) from None
            self._check_resume(saved["config"])
        self.saved_fingerprint = saved.get("data_fingerprint") if saved else None
        return saved

    def _datasets(self, ctx: DistContext, saved: dict[str, Any] | None
                  ) -> tuple[ImageSet, ImageSet, list[float], list[float]]:
        """(training set, test set, mean, std): the classes and subsets the config asks for, scored."""
        cfg = self.cfg
        train_set, test_set = self._load_data(ctx)
        if cfg.classes is not None:  # a transfer task on some of the classes
            train_set, test_set = select_classes(train_set, cfg.classes), select_classes(test_set, cfg.classes)
        if cfg.holdout:  # the held-out split is scored in the test set's place; the test set is not
            train_set, test_set = train_set.split_off(cfg.holdout, HOLDOUT_SEED)
        mean, std = (saved["mean"], saved["std"]) if saved else train_set.mean_std()
        train_set = train_set.subset(cfg.train_subset, cfg.seed)
        test_set = test_set if cfg.holdout else test_set.subset(cfg.test_subset, TEST_SUBSET_SEED)
        check_scored(train_set, "training")
        check_scored(test_set, "test")
        self.input_size = tuple(train_set.images.shape[1:])
        return train_set, test_set, mean, std

    def _loaders(self, ctx: DistContext, train_set: ImageSet, test_set: ImageSet, mean: list[float],
                 std: list[float]) -> None:
        """The device, autocast and memory format; the training and test loaders; the run's length."""
        cfg = self.cfg
        device = self.device = ctx.device
        amp = self.amp = _amp_dtype(cfg, device)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else (device.type == "cpu" or
                                                                                       amp is not None)
        self.train_loader = TensorLoader(train_set, cfg.batch_size, shuffle=True,
                                         augment=Augment(cfg.augment_pad, cfg.augment_flip, cfg.cutout),
                                         mean=mean, std=std,
                                         seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size, device=device,
                                         channels_last=self.channels_last)
        eval_batch = max(cfg.batch_size, 256) // ctx.world_size * ctx.world_size
        self.test_loader = TensorLoader(test_set, eval_batch, shuffle=False, mean=mean, std=std, rank=ctx.rank,
                                        world_size=ctx.world_size, device=device, channels_last=self.channels_last)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise TrainError(f"{len(train_set)} training images make no batch of {cfg.batch_size}; lower batch_size")
        self.total = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * self.steps_per_epoch))

    def _model(self, ctx: DistContext, train_set: ImageSet, saved: dict[str, Any] | None
               ) -> tuple[nn.Module, nn.Module]:
        """(what the steps run: the model or its DDP wrapper, the model): built from the seed, checked against
        the task and memory, in the memory format, initialised from `init_from` for a new run."""
        cfg, device = self.cfg, self.device
        if device.type == "cpu":  # count on meta first: a model too large to train is an error, not a crash
            with torch.device("meta"):
                counted = build_model(cfg, train_set.num_classes, train_set.channels, self.input_size)
            check_memory(count_params(counted), 4, f"{cfg.model} (conv={cfg.conv}, width={cfg.width})")
        torch.manual_seed(cfg.seed)
        try:
            model = build_model(cfg, train_set.num_classes, train_set.channels, self.input_size).to(device)
            check_task(model, train_set.task, cfg.model, cfg.data)
        except ValueError as err:
            raise TrainError(str(err)) from None
        self.task = train_set.task
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.sync_bn:
            if device.type != "cuda":
                raise ValueError("config field 'sync_bn' = true needs CUDA (SyncBatchNorm has no CPU kernel)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = _unwrap(model)
        self.hooks = [m for m in net.modules() if callable(getattr(m, "after_optimizer_step", None))]
        self.init_note = ""
        if cfg.init_from and saved is None:
            copied, fresh = load_initial_weights(net, cfg.init_from)
            self.init_note = f"{copied} tensors from {cfg.init_from}" + (f", {len(fresh)} new" if fresh else "")
        self.trainable = select_trainable(net, cfg.train_only)  # frozen before DDP sees which need gradients
        self.trained_params = sum(p.numel() for p in self.trainable)
        if ctx.distributed:
            model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.wrapped = model
        return model, net

    def _optimizer(self) -> None:
        """SGD over the parameters the config trains, and the fp16 gradient scaler."""
        cfg = self.cfg
        self.opt = torch.optim.SGD(self.trainable, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                   weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)

    def _state(self, net: nn.Module, saved: dict[str, Any] | None, mean: list[float], std: list[float]) -> None:
        """A fresh TrainState, or the checkpoint's with the model, optimizer, scaler and RNG restored."""
        total = self.total
        if saved is None:
            self.state = TrainState.start(mean, std, total)
            return
        self.state = TrainState.from_checkpoint(saved, total)
        net.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        self.scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"]["torch"])
        if "cuda" in saved["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        if self.state.step > total:
            raise TrainError(f"{self.run.path} is at step {self.state.step}, past the {total} steps asked for; a "
                             f"run cannot be shortened: resume it with at least {self.state.step} steps, or "
                             f"train a new run")
        if self.ctx.is_main:
            self.run.truncate_metrics(self.state.step)

    def _start_progress(self, ctx: DistContext, train_images: int, test_images: int, resumed: bool) -> None:
        cfg = self.cfg
        self.progress = Progress(cfg.progress, self.total, self.state.step, cfg.log_every, enabled=ctx.is_main)
        if not ctx.is_main:
            return
        what = f"{cfg.model}" + (f" conv={cfg.conv}" if cfg.conv else "") + (f" width={cfg.width}" if cfg.width else "")
        self.progress.write(
            f"training {what} on {cfg.data} ({train_images} train / {test_images} test images, "
            f"{self.steps_per_epoch} steps/epoch, {self.total} steps, batch {cfg.batch_size}"
            f"{f' on {ctx.world_size} ranks' if ctx.distributed else ''}, {self.device}"
            f"{', channels_last' if self.channels_last else ''}{f', amp {self.amp}' if self.amp else ''}) "
            f"-> {self.run.path}" + (f" (resumed at step {self.state.step})" if resumed else "")
            + (f"; initialised with {self.init_note}" if self.init_note else "")
            + (f"; training only {cfg.train_only} ({self.trained_params:,} parameters)"
               if cfg.train_only != "all" else ""))

    def train_epoch(self) -> None:
        """From the current batch to the epoch's end (or the run's last step), checkpointing every
        `checkpoint_every` steps on the way; then `end_epoch()`."""
        s, cfg = self.state, self.cfg
        t_epoch = time.perf_counter()
        for x, y in self.train_loader.epoch(s.epoch, s.batch):
            self.train_step(x, y)
            if s.step >= self.total:
                break
            if cfg.checkpoint_every and s.step % cfg.checkpoint_every == 0 and s.batch < self.steps_per_epoch:
                s.train_seconds += time.perf_counter() - t_epoch
                self.checkpoint()
                t_epoch = time.perf_counter()
        s.train_seconds += time.perf_counter() - t_epoch
        self.end_epoch()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step on a batch, in the order the module docstring gives."""
        s, cfg, ctx = self.state, self.cfg, self.ctx
        lr = lr_at(cfg, s.step, self.steps_per_epoch, self.total)
        for group in self.opt.param_groups:
            group["lr"] = lr
        with _autocast(self.device, self.amp):
            out = self.wrapped(x)
            aux = None
            if isinstance(out, tuple):  # a model with an auxiliary head in training (DARTS): (logits, aux)
                out, aux = out
            loss = task_loss(out.float(), y, cfg.label_smoothing)
            if aux is not None:
                loss = loss + cfg.aux_weight * task_loss(aux.float(), y, cfg.label_smoothing)
        correct, count = correct_and_count(out.argmax(1), y)  # images, or scored pixels
        stats = torch.stack([loss.detach().double() * count, correct, count,
                             (~torch.isfinite(loss.detach())).double()])
        stats = all_reduce_sum(stats, ctx).tolist()
        if stats[3]:
            self.progress.close()
            raise self._diverged(self._nonfinite_message(s.step, s.epoch))
        if ctx.distributed and y.dim() == 3:
            # DDP averages the ranks' gradients, each of a mean over that rank's scored pixels; padding leaves
            # the ranks different counts, so weight each by its share to follow one process's mean over all
            # (no scored pixel anywhere made every loss NaN: the step stopped as diverged above)
            loss = loss * (count.item() * ctx.world_size / stats[2])
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.opt)
            norm = torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), cfg.grad_clip)
            if not torch.isfinite(norm) and self.amp != torch.float16:
                self.progress.close()
                raise self._diverged(self._nonfinite_message(s.step, s.epoch, "gradient norm"))
        self.scaler.step(self.opt)
        self.scaler.update()
        with torch.no_grad():
            for m in self.hooks:
                m.after_optimizer_step()
        s.step += 1
        s.batch += 1
        s.loss_trace.add(stats[0] / stats[2])
        s.sums = [s.sums[0] + stats[0], s.sums[1] + stats[1], s.sums[2] + stats[2]]
        loss_avg, acc_avg = s.epoch_means
        self.progress.step(s.step, s.epoch, loss_avg, acc_avg, lr)
        if ctx.is_main and s.step % cfg.log_every == 0:
            self._log({"kind": "step", "step": s.step, "epoch": s.epoch + s.batch / self.steps_per_epoch,
                       "train_loss": loss_avg, "train_acc": acc_avg, "lr": lr})
        self._emit("step", {"step": s.step, "epoch": s.epoch, "batch": s.batch, "loss": stats[0] / stats[2]})

    def end_epoch(self) -> None:
        """The epoch's record (evaluated when due or at the run's end) to metrics.jsonl; the next epoch's
        position when this one is complete; a checkpoint."""
        s, cfg = self.state, self.cfg
        epoch_done = s.batch >= self.steps_per_epoch
        finished = s.step >= self.total
        train_loss, train_acc = s.epoch_means
        record = {"kind": "epoch", "step": s.step, "epoch": s.epoch + s.batch / self.steps_per_epoch,
                  "train_loss": train_loss, "train_acc": train_acc,
                  "lr": lr_at(cfg, s.step - 1, self.steps_per_epoch, self.total)}
        if finished or (epoch_done and cfg.eval_every and (s.epoch + 1) % cfg.eval_every == 0):
            s.last_eval = evaluate_scores(self.wrapped, self.test_loader, self.ctx, self.amp)
            test_acc = s.last_eval["test_acc"]
            s.add_eval(test_acc)
            record.update(self.scored(s.last_eval))
            if s.best["test_acc"] is None or test_acc > s.best["test_acc"]:
                s.best = {"test_acc": test_acc, "epoch": record["epoch"]}
        record.update(train_seconds=s.train_seconds, seconds=s.seconds + time.perf_counter() - self.t_start)
        s.last_record = record
        if self.ctx.is_main:
            self._log(record)
            score = "mIoU" if self.task == "segmentation" else "acc"
            split = "val" if self.cfg.holdout else "test"
            test = (f" | {split} loss {record[split + '_loss']:.4f} {score} {100 * record[split + '_acc']:.2f}%"
                    if split + "_acc" in record else "")
            self.progress.write(f"epoch {record['epoch']:.4g}: train loss {record['train_loss']:.4f} acc "
                                f"{100 * record['train_acc']:.2f}%{test} | {s.train_seconds:.0f} s training")
        self._emit("epoch", {"step": s.step, "epoch": s.epoch, "record": record})
        if epoch_done:
            s.epoch, s.batch, s.sums = s.epoch + 1, 0, [0.0, 0.0, 0.0]
        self.checkpoint()

    def _log(self, record: dict[str, Any]) -> None:
        """A metrics record (rank 0): to metrics.jsonl, and to TensorBoard when the config asks."""
        self.run.append_metrics(record)
        if self.tensorboard is not None:
            self.tensorboard.record(record)

    def checkpoint(self) -> None:
        """Save the run (rank 0, atomically): the model, optimizer, scaler and RNG states and the TrainState.
        A state whose weights went non-finite is not saved: the run stops as diverged."""
        if not self.ctx.is_main:
            return
        s = self.state
        broken = next((n for n, t in self.model.state_dict().items()
                       if t.is_floating_point() and not torch.isfinite(t).all()), None)
        if broken is not None:  # a finite loss can still come with an update that overflowed the weights
            self.progress.close()
            raise self._diverged(f"{broken} became NaN/inf by step {s.step}; this state was not saved; "
                                 + self._last_good())
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        payload = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                   "scaler": self.scaler.state_dict(), "rng": rng, "config": self.cfg.to_dict(),
                   "data_fingerprint": self.data_fingerprint,
                   **s.to_checkpoint(time.perf_counter() - self.t_start)}
        try:
            save_checkpoint(payload, self.run.checkpoint)
        except CheckpointError as err:
            raise TrainError(str(err)) from None
        self._emit("checkpoint", {"step": s.step, "epoch": s.epoch, "batch": s.batch})

    def finish(self) -> dict[str, Any]:
        """The run's result (also written to result.json)."""
        s = self.state
        self.progress.close()
        if not s.last_record:  # resumed at the end of a run whose checkpoint predates the saved last record
            train_loss, train_acc = s.epoch_means
            s.last_record = {"train_loss": train_loss, "train_acc": train_acc}
        result = self._summary("done", assess(s.loss_trace.finished()))
        result.update(**self.scored({**s.last_eval, "last5_test_acc": s.last_evals_mean,
                                     "best_test_acc": s.best["test_acc"]}),
                      best_epoch=s.best["epoch"],
                      train_loss=s.last_record["train_loss"], train_acc=s.last_record["train_acc"])
        if self.ctx.is_main:
            self.run.write("result.json", result)
            if self.tensorboard is not None:
                self.tensorboard.finish(result)
        self._emit("end", {"step": s.step, "result": result})
        return result

    def _summary(self, status: str, health: dict[str, Any]) -> dict[str, Any]:
        cfg, s = self.cfg, self.state
        prof = profile(self.model, self.input_size)
        return {
            "status": status, "run_dir": str(self.run.path), "model": cfg.model, "conv": cfg.conv,
            "width": cfg.width, "data": cfg.data, "data_fingerprint": self.data_fingerprint, "preset": cfg.preset,
            "health": health,
            "task": self.task, "score": SCORE_NAMES[self.task],
            "loss_trace": s.loss_trace.finished(), "steps": s.step, "epochs": s.step / self.steps_per_epoch,
            "train_seconds": s.train_seconds, "seconds": s.seconds + time.perf_counter() - self.t_start,
            "world_size": self.ctx.world_size, "device": str(self.device),
            "amp": str(self.amp) if self.amp else None, "channels_last": self.channels_last,
            "profile": {k: getattr(prof, k) for k in ("params", "param_bits", "buffers", "macs", "deploy_params",
                                                      "deploy_macs", "size_bytes")},
            "trained_params": self.trained_params, "config": cfg.to_dict(), "environment": environment(),
        }

    def scored(self, values: dict[str, Any]) -> dict[str, Any]:
        """`values` with their test_* keys named val_* when the run scores a held-out validation split."""
        if not self.cfg.holdout:
            return values
        return {k.replace("test_", "val_"): v for k, v in values.items()}

    def evaluate(self) -> dict[str, float]:
        """The model's scores now on the scored split (the test set, or the validation split held out of the
        training set): what a callback judges a run by mid-way."""
        return self.scored(evaluate_scores(self.wrapped, self.test_loader, self.ctx, self.amp))

    def _pruned(self, reason: str, scores: dict[str, float]) -> PrunedError:
        """The error to raise when a callback ended the run early, after recording it as pruned in result.json
        (with the scores it was judged by)."""
        s = self.state
        self.progress.close()
        result = self._summary("pruned", assess(s.loss_trace.finished())) | {"reason": reason} | scores
        if self.ctx.is_main:
            self.run.write("result.json", result)
        self._emit("end", {"step": s.step, "result": result})
        return PrunedError(f"pruned at step {s.step}: {reason}", result)

    def _diverged(self, message: str) -> DivergedError:
        """The error to raise for a non-finite loss, weight or gradient, after recording the run as diverged in
        result.json (a study then reports it instead of training it again)."""
        result = self._summary(DIVERGED, assess((), nonfinite=True) | {"reason": message})
        result.update(test_loss=None, test_acc=None, train_loss=None, train_acc=None)
        if self.ctx.is_main:
            self.run.write("result.json", result)
        return DivergedError(message, result)

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
    if cfg.classes is not None:
        test = select_classes(test, cfg.classes)
    test = test.subset(cfg.test_subset, TEST_SUBSET_SEED)
    check_scored(test, "test")
    model = build_model(cfg, test.num_classes, test.channels, tuple(test.images.shape[1:]))
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
    result: dict[str, Any] = {"checkpoint": str(path), "model": cfg.model, "conv": cfg.conv, "data": cfg.data,
                              "step": state["step"], **evaluate_scores(model, loader), "images": len(test),
                              "score": SCORE_NAMES[test.task]}
    if fold:
        folded = fold_model(copy.deepcopy(model)).eval()
        f_loss, f_acc = evaluate_model(folded, loader)
        with torch.no_grad():
            x, _ = next(iter(loader.epoch(0)))
            diff = (model(x) - folded(x)).abs().max().item()
        result.update(folded_test_loss=f_loss, folded_test_acc=f_acc, folded_max_logit_diff=diff)
    return result

