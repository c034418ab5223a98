"""Command line: ``attnflow COMMAND``, one module per command in this package.

Commands: ``presets``, ``train``, ``sample``, ``evaluate``, ``super-resolve``, ``translate``,
``compare``, ``attention``, ``bench``, ``demo``. Run ``attnflow COMMAND --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import re
import sys

from . import attention, bench, compare, demo, evaluate, presets, sample, super_resolve, train, translate

__all__ = ["main", "build_parser", "COMMANDS"]

#: the command modules, each with ``add_parser(subparsers)``, in the order ``--help`` lists them
COMMANDS = (presets, train, sample, evaluate, super_resolve, translate, compare, attention, bench, demo)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``attnflow CMD: error: --samples must be >= 1, got '0'``)."""

    def error(self, message: str):
        message = re.sub(r"^argument ([^:]+): ", lambda m: m.group(1).split("/")[0] + " ", message)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="attnflow",
        description="Normalizing flows with invertible attention (iMap, iTrans): train, sample, evaluate.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..config import ConfigError
    from ..training import CheckpointError, TrainingError, TrainingInterrupted

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad option (already reported on one line)
        return int(exit_.code or 0)
    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as err:  # Ctrl-C: the message names the checkpoint to resume from
        if args.debug:
            raise
        print(f"attnflow {args.command}: interrupted: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"attnflow {args.command}: interrupted", file=sys.stderr)
        return 130
    except TrainingError as err:
        if args.debug:
            raise
        print(f"attnflow {args.command}: training stopped: {err}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as err:
        if args.debug:
            raise
        print(f"attnflow {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a full disk: the last good checkpoint stays (writes are atomic)
        if args.debug:
            raise
        print(f"attnflow {args.command}: system error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
