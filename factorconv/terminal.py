"""Progress on a terminal or in a log: a tqdm bar where one can be drawn, plain lines otherwise.

`BarOrLines` is what a run's step progress and a study's run progress share: deciding between the two ("auto":
a bar on a terminal where tqdm is installed, plain lines in a log or CI), writing a line above the bar, and
closing it.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["BarOrLines"]


class BarOrLines:
    def __init__(self, mode: str, stream: TextIO | None = None, **bar: Any) -> None:
        """`mode` "auto", "bar", "plain" or "off"; `bar`: tqdm's arguments (total, initial, unit)."""
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "plain"
        self.bar: Any = None
        if mode == "bar":
            try:
                from tqdm import tqdm
            except ImportError:
                mode = "plain"
            else:
                self.bar = tqdm(file=self.stream, dynamic_ncols=True, leave=True, **bar)
        self.mode = mode

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
