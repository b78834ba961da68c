"""The command line: ``python -m pescador demo`` (``--help`` for its options).

The help text the command prints is plain text, written here in :func:`parser`.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .exceptions import PescadorError

_DESCRIPTION = "pescador: run the demo (a small classifier trained on a pescador pipeline)."

_EXAMPLES = """\
examples:
  python -m pescador demo
  python -m pescador demo --workers 4

The command has its own help: python -m pescador demo --help
"""

_DEMO = """\
Train a small softmax classifier with numpy on synthetic data, fed by a
pipeline of five noisy streams, multiplexed (mux), re-batched (buffer) and
produced in worker processes (zmq_offload). Prints items/s while it trains
and the held-out accuracy at the end."""


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m pescador``, with its subcommands."""
    from . import demo

    top = argparse.ArgumentParser(
        prog="python -m pescador",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"pescador {__version__}", help="print the version and exit")
    commands = top.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND",
                                  help="one of these (python -m pescador COMMAND --help for its options):")
    raw = argparse.RawDescriptionHelpFormatter

    show = commands.add_parser("demo", help="train a small classifier on a pescador pipeline", description=_DEMO,
                               formatter_class=raw)
    demo.add_arguments(show)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m pescador`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = parser().parse_args(argv)
    try:
        from . import demo

        return demo.run(args)
    except PescadorError as exc:
        print(f"pescador: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
