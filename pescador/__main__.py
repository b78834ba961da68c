"""The command line: ``python -m pescador keys|serve|demo`` (``--help`` for each).

The help text the command prints is plain text, written here in :func:`parser`.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys

from . import __version__
from .core import Stream
from .exceptions import PescadorError
from .remote import make_keys, serve

_DESCRIPTION = "pescador: make CURVE keys, serve a stream to consumers on other machines, or run the demo."

_EXAMPLES = """\
examples:
  python -m pescador keys keys/ producer
  python -m pescador serve mydata.sources:sample_npz /data/part3.npz 16 \\
      --bind tcp://0.0.0.0:5555 --key keys/producer.key_secret --authorized keys/trainer.key
  python -m pescador demo --workers 4

Each command has its own help: python -m pescador serve --help
"""

_KEYS = """\
Write a CURVE key pair into DIRECTORY: NAME.key (the public key: give it to
the other side) and NAME.key_secret (the secret key: it never leaves this
machine; mode 0600)."""

_SERVE = """\
Run pescador.stream(FUNCTION, *ARGS) (or the Stream that MODULE:FUNCTION
names) and serve its items on ENDPOINT until the stream ends.

ENDPOINT is tcp://HOST:PORT (tcp://0.0.0.0:5555 for every interface), which
needs --key and --authorized (or --insecure), or ipc:///DIR/NAME for a
consumer on this machine, DIR being a directory only you can enter.

Each ARG is read as a Python literal where it parses as one (16, [1, 2],
'a b'), and is a string otherwise (/data/part3.npz)."""

_DEMO = """\
Train a small softmax classifier with numpy on synthetic data, fed by a
pipeline of five noisy streams, multiplexed (mux), re-batched (buffer) and
produced in worker processes (zmq_offload). Prints items/s while it trains
and the held-out accuracy at the end."""


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _target(spec: str):
    module, _, name = spec.partition(":")
    if not module or not name:
        raise PescadorError(f"serve: {spec!r} must be MODULE:FUNCTION, e.g. mydata.sources:sample_npz")
    try:
        obj = importlib.import_module(module)
    except ImportError as exc:
        raise PescadorError(f"serve: cannot import {module!r}: {exc}") from None
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PescadorError(f"serve: {module!r} has no {name!r}") from None
    return obj


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

    keys = commands.add_parser("keys", help="write a CURVE key pair NAME.key and NAME.key_secret into DIRECTORY",
                               description=_KEYS, formatter_class=raw)
    keys.add_argument("directory", metavar="DIRECTORY", help="where to write the two files (made if missing)")
    keys.add_argument("name", metavar="NAME", help="the file names' stem, e.g. producer or trainer")

    run = commands.add_parser("serve", help="serve the items of a recipe over TCP or ipc", description=_SERVE,
                              formatter_class=raw)
    run.add_argument("target", metavar="MODULE:FUNCTION", help="a generator function, or a Stream, in an importable module")
    run.add_argument("args", metavar="ARG", nargs="*", help="arguments for FUNCTION (Python literals, else strings)")
    run.add_argument("--bind", metavar="ENDPOINT", required=True,
                     help="tcp://HOST:PORT, or ipc:///DIR/NAME with DIR private to you")
    run.add_argument("--key", metavar="FILE", help="this producer's secret key, NAME.key_secret")
    run.add_argument("--authorized", metavar="PATH", action="append",
                     help="a consumer's public NAME.key, or a directory of them (repeat for more)")
    run.add_argument("--insecure", action="store_true",
                     help="allow plain TCP (loopback included), or an ipc path that others can reach")
    run.add_argument("--hwm", metavar="N", type=int, default=32,
                     help="messages that may wait for the consumer before the producer blocks (default: 32)")
    run.add_argument("--batch-wait", metavar="SECONDS", type=float, default=0.001,
                     help="how long a fast source's small items may be held to share a message; "
                          "0: one message per item (default: 0.001)")

    show = commands.add_parser("demo", help="train a small classifier on a pescador pipeline", description=_DEMO,
                               formatter_class=raw)
    demo.add_arguments(show)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m pescador`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = parser().parse_args(argv)
    try:
        if args.command == "demo":
            from . import demo

            return demo.run(args)
        if args.command == "keys":
            public, secret = make_keys(args.directory, args.name)
            print(f"public key (give it to the other side): {public}")
            print(f"secret key (keep it here): {secret}")
            return 0
        return _serve(args)
    except PescadorError as exc:
        print(f"pescador: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    target = _target(args.target)
    source = target if isinstance(target, Stream) else None
    if source is None:
        from .core import stream

        source = stream(target, *map(_literal, args.args))
    elif args.args:
        raise PescadorError(f"serve: {args.target} is already a Stream; it takes no arguments")
    print(f"pescador: serving {source!r} on {args.bind}", file=sys.stderr, flush=True)
    sent = serve(source, args.bind, key=args.key, authorized=args.authorized, insecure=args.insecure, hwm=args.hwm,
                 batch_wait=args.batch_wait)
    print(f"pescador: the stream ended after {sent:,} items", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
