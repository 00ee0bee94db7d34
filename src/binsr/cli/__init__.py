"""The ``binsr`` command line: one sub-module per subcommand.

Each module listed in :data:`COMMAND_MODULES` defines ``register(subparsers)``, which adds its parser and
sets ``func`` (a callable taking the parsed arguments and returning an exit code). Modules are imported
explicitly, so a new subcommand is one file plus one line here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from binsr.errors import BinsrError, TrainingStoppedError

COMMAND_MODULES: tuple[str, ...] = (
    "eval",
    "upscale",
    "compare",
    "train",
    "summary",
    "bench",
    "export",
    "study",
    "activations",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    from binsr import __version__

    parser = argparse.ArgumentParser(
        prog="binsr", description="Binary (1-bit) neural networks for image super-resolution."
    )
    parser.add_argument("--version", action="version", version=f"binsr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"binsr.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``binsr`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that left early fails here, inside the handlers below
        return code
    except BrokenPipeError:
        # stdout's reader stopped reading (``binsr study S.yaml --dry-run | head``): stop quietly, as
        # Unix tools do; stdout now points at /dev/null so the interpreter's last flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except TrainingStoppedError as error:
        print(f"binsr: interrupted: {error}", file=sys.stderr)
        return error.exit_code
    except BinsrError as error:
        print(f"binsr: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("binsr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
