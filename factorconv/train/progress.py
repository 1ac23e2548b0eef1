"""Progress output: a tqdm bar over the run's steps on a terminal, plain lines every `log_every` steps
otherwise (logs, CI), nothing with "off". Only the main rank reports. Everything goes to stderr, so
stdout stays free for `--json`."""

from __future__ import annotations

import time
from typing import TextIO

from ..terminal import BarOrLines

__all__ = ["Progress"]


class Progress(BarOrLines):
    def __init__(self, mode: str, total: int, initial: int, log_every: int, enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        super().__init__(mode if enabled else "off", stream, total=total, initial=initial, unit="step")
        self.total, self.log_every = total, log_every
        self.t0, self.s0 = time.perf_counter(), initial

    def step(self, step: int, epoch: int, loss: float, acc: float, lr: float) -> None:
        if self.mode == "bar":
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(f"ep {epoch + 1} loss {loss:.4f} acc {100 * acc:.2f}% lr {lr:.4g}", refresh=False)
        elif self.mode == "plain" and (step % self.log_every == 0 or step == self.total):
            rate = (step - self.s0) / max(time.perf_counter() - self.t0, 1e-9)
            self.write(f"step {step}/{self.total}  epoch {epoch + 1}  loss {loss:.4f}  acc {100 * acc:.2f}%  "
                       f"lr {lr:.4g}  {rate:.2f} steps/s")
