"""The `factorconv` command: one module per subcommand (`<name>_cmd.py`: its parser and its handler), the
values and arguments they share (`args`), and `main`, which parses, runs the handler and turns errors the user
can fix into one line on stderr: exit status 2 for a usage error (a bad value, ValueError from the library),
1 for one met while running (data, training, checkpoints, studies, files), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

import torch

from ..outputs import OutputError
from ..version import __version__
from . import (
    bench_cmd,
    compare_cmd,
    eval_cmd,
    export_cmd,
    list_cmd,
    plan_cmd,
    profile_cmd,
    report_cmd,
    reproduce_cmd,
    show_cmd,
    train_cmd,
    tune_cmd,
)
from .args import (
    FLAGGED_EXIT,
    Parser,
    UsageError,
    count,
    one_line,
    os_error_line,
    parse_input_size,
    parse_options,
    parse_value,
)

__all__ = ["COMMANDS", "FLAGGED_EXIT", "UsageError", "build_parser", "main", "parse_input_size", "parse_options",
           "parse_value"]


# in the order `factorconv --help` lists them
COMMANDS = (list_cmd, profile_cmd, train_cmd, eval_cmd, compare_cmd, tune_cmd, reproduce_cmd, show_cmd, export_cmd,
            bench_cmd, plan_cmd, report_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="factorconv",
                    description="Efficient convolution operators: list, profile, and compare them on one backbone.")
    parser.add_argument("--version", action="version", version=f"factorconv {__version__}")
    parser.add_argument("--threads", type=count(), default=None, help="torch CPU threads (default: torch's)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from ..data import DatasetError
    from ..study import StudyError
    from ..train import CheckpointError, RunDirError, TrainError

    def fail(message: str, status: int) -> int:
        print(f"factorconv {args.command}: {message}", file=sys.stderr)
        return status

    try:
        return int(args.func(args))
    except (ValueError, UsageError) as err:
        return fail(f"error: {one_line(err)}", 2)
    except (DatasetError, TrainError, CheckpointError, RunDirError, StudyError, OutputError) as err:
        return fail(f"error: {one_line(err)}", 1)
    except KeyboardInterrupt as err:
        hint = getattr(err, "resume_hint", "")
        return fail("interrupted" + (f"; {hint}" if hint else ""), 130)
    except BrokenPipeError:  # `factorconv list | head`: the reader left; say nothing more
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # a file that cannot be read or written: the file and why, not a traceback
        return fail(f"error: {os_error_line(err)}", 1)
    except (MemoryError, RuntimeError) as err:
        if not isinstance(err, MemoryError) and "allocate" not in str(err):
            raise  # a real bug: its traceback is what a report needs
        return fail(f"error: not enough memory for what was asked ({one_line(err) or 'MemoryError'}); use a "
                    "smaller width, batch or model", 1)


if __name__ == "__main__":
    sys.exit(main())
