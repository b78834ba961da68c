"""Command line: ``python -m pescador keys DIR NAME`` and ``python -m pescador serve ...``.

``keys`` writes a CURVE key pair (``NAME.key`` to share, ``NAME.key_secret``
to keep).  ``serve MODULE:FUNCTION --bind ENDPOINT [ARG ...]`` (ENDPOINT:
``tcp://HOST:PORT`` with keys, or ``ipc:///DIR/NAME`` in a private directory
for a consumer on the same machine) runs
``pescador.stream(FUNCTION, *ARGS)`` (or the Stream that MODULE.FUNCTION
is) and serves its items until it ends; ARGs are Python literals where they
parse as one (``16``, ``[1, 2]``, ``'a b'``), else strings.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys

from .core import Stream
from .exceptions import PescadorError
from .remote import make_keys, serve


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pescador", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    keys = commands.add_parser("keys", help="write a CURVE key pair NAME.key and NAME.key_secret into DIR")
    keys.add_argument("directory")
    keys.add_argument("name")
    run = commands.add_parser("serve", help="serve the items of a recipe over TCP or ipc")
    run.add_argument("target", help="MODULE:FUNCTION (a generator function, or a Stream)")
    run.add_argument("args", nargs="*", help="arguments for FUNCTION (Python literals or strings)")
    run.add_argument("--bind", required=True, help="tcp://HOST:PORT, or ipc:///DIR/NAME (DIR private to you)")
    run.add_argument("--key", help="this producer's NAME.key_secret")
    run.add_argument("--authorized", action="append", help="a consumer's public .key file, or a directory of them")
    run.add_argument("--insecure", action="store_true", help="allow plain TCP (loopback included), or an ipc path others can reach")
    run.add_argument("--hwm", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        if args.command == "keys":
            public, secret = make_keys(args.directory, args.name)
            print(f"public key (give it to the other side): {public}")
            print(f"secret key (keep it here): {secret}")
            return 0
        target = _target(args.target)
        source = target if isinstance(target, Stream) else None
        if source is None:
            from .core import stream

            source = stream(target, *map(_literal, args.args))
        elif args.args:
            raise PescadorError(f"serve: {args.target} is already a Stream; it takes no arguments")
        print(f"pescador: serving {source!r} on {args.bind}", file=sys.stderr, flush=True)
        sent = serve(source, args.bind, key=args.key, authorized=args.authorized, insecure=args.insecure, hwm=args.hwm)
        print(f"pescador: the stream ended after {sent:,} items", file=sys.stderr)
        return 0
    except PescadorError as exc:
        print(f"pescador: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
