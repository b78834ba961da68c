"""A typed pipeline, checked by mypy in tests/test_typing.py (not collected by pytest: no tests).

Every ``assert_type`` states what a type checker infers; mypy fails the test where it infers
anything else.  The pipeline is written with direct calls, which infer fully; through
``toolz.pipe`` (untyped) a pipeline is ``Any`` unless annotated, as at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type

import pescador
from pescador import Stream, Transform
from pescador.core import ItemTransform, PoolTransform

Item = dict[str, np.ndarray]


def noisy(x: np.ndarray, sigma: float = 1.0) -> Iterator[Item]:
    rng = np.random.default_rng(0)
    while True:
        yield {"X": x + sigma * rng.standard_normal(x.shape), "Y": np.zeros(len(x))}


def numbers(n: int) -> Iterator[int]:
    yield from range(n)


def pipeline() -> None:
    # sources: a generator function and its arguments (checked against its signature), a list
    source = pescador.stream(noisy, np.zeros((4, 3)), sigma=0.5)
    assert_type(source, Stream[Item])
    assert_type(pescador.stream(numbers, 3), Stream[int])
    assert_type(pescador.stream([1.0, 2.0]), Stream[float])
    assert_type(pescador.stream(source), Stream[Item])

    # combinators keep the item type
    assert_type(pescador.take(5), ItemTransform)
    assert_type(pescador.take(5, source), Stream[Item])
    assert_type(pescador.take(5)(source), Stream[Item])
    assert_type(pescador.cycle(None, pescador.stream(numbers, 3)), Stream[int])
    assert_type(pescador.cycle()(pescador.stream(numbers, 3)), Stream[int])

    # a pool of streams -> one stream
    pool = [pescador.stream(noisy, np.zeros((4, 3)), sigma=s) for s in (0.0, 0.5, 1.0)]
    assert_type(pescador.mux(k=2, lam=16), PoolTransform)
    mixed = pescador.mux(k=2, lam=16, random_state=0)(pool)
    assert_type(mixed, Stream[Item])
    assert_type(pescador.mux.chain_mux()(pool), Stream[Item])
    assert_type(pescador.epochs(2)(pool), Stream[Item])

    # buffer: dicts of arrays in, dicts of arrays out
    assert_type(pescador.buffer(16), Transform[dict[str, Any], dict[str, np.ndarray]])
    batches = pescador.buffer(16)(mixed)
    assert_type(batches, Stream[dict[str, np.ndarray]])
    assert_type(pescador.buffer(16, mixed, strict=False), Stream[dict[str, np.ndarray]])

    # offload and observe keep the item type
    offloaded = pescador.zmq_offload(workers=2)(batches)
    assert_type(offloaded, Stream[dict[str, np.ndarray]])
    measured = pescador.measure(pescador.Meter())(offloaded)
    assert_type(measured, Stream[dict[str, np.ndarray]])

    # tuples for frameworks
    pairs = pescador.tuples("X", "Y")(measured)
    assert_type(pairs, Stream[tuple[Any, Any]])
    assert_type(pescador.tuples("X")(measured), Stream[tuple[Any]])
    assert_type(pescador.keras_tuples("X", "Y")(measured), Stream[tuple[Any, Any]])
    assert_type(pescador.keras_tuples(inputs="X")(measured), Stream[tuple[Any, Any]])
    assert_type(pescador.tuples(measured, "X", "Y"), Iterator[tuple[Any, ...]])

    # what a run yields
    for batch in pescador.take(2, batches):
        assert_type(batch, dict[str, np.ndarray])
    for x, y in pairs.iterate(max_iter=2):
        assert_type(x, Any)
    assert_type(next(iter(source)), Item)
    assert_type(list(pescador.cache(source, 4)), list[Item])
    assert_type(pescador.cache(4, prob=0.5)(source), Stream[Item])

    # resume: an iterator of the same items
    run = pescador.resumable(pescador.take(10, pescador.stream(numbers, 100)))
    assert_type(next(run), int)
    state: dict = run.state_dict()
    assert_type(pescador.resumable(pescador.take(10, pescador.stream(numbers, 100)), state), pescador.resume.Resumable[int])

    # toolz.pipe has no types: the result is Any unless annotated
    from toolz import pipe  # type: ignore[import-untyped]

    piped: Stream[dict[str, np.ndarray]] = pipe(pool, pescador.mux(k=2, lam=16), pescador.buffer(16))
    assert_type(piped, Stream[dict[str, np.ndarray]])
