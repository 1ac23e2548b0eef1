"""Progress output: a tqdm bar over the run's steps on a terminal, plain lines every `log_every` steps
otherwise (logs, CI), nothing with "off". Only the main rank reports. Everything goes to stderr, so
stdout stays free for `--json`."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, mode: str, total: int, initial: int, log_every: int, enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "plain"
        if mode == "bar":
            try:
                from tqdm import tqdm
            except ImportError:
                mode = "plain"
        self.mode = mode if enabled else "off"
        self.total, self.log_every = total, log_every
        self.bar: Any = None
        self.t0, self.s0 = time.perf_counter(), initial
        if self.mode == "bar":
            self.bar = tqdm(total=total, initial=initial, unit="step", file=self.stream, dynamic_ncols=True,
                            leave=True)

    def step(self, step: int, epoch: int, loss: float, acc: float, lr: float) -> None:
        if self.mode == "bar":
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(f"ep {epoch + 1} loss {loss:.4f} acc {100 * acc:.2f}% lr {lr:.4g}", refresh=False)
        elif self.mode == "plain" and (step % self.log_every == 0 or step == self.total):
            rate = (step - self.s0) / max(time.perf_counter() - self.t0, 1e-9)
            self.write(f"step {step}/{self.total}  epoch {epoch + 1}  loss {loss:.4f}  acc {100 * acc:.2f}%  "
                       f"lr {lr:.4g}  {rate:.2f} steps/s")

    def write(self, line: str) -> None:
        if self.mode == "off":
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
