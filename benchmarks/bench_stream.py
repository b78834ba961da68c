"""Per-item cost of plain runs (stream, take, cycle, tuples, Streamer) against the hand-written loops.

Workload: a generator of small dict items (one int per item), the cheapest
item there is, so that what a run adds per item shows.  Each row is a
plain run next to the loop a user would write instead, its *limit*:

- ``stream(gen)``: the raw generator loop, ``for item in gen(n)``;
- ``take(n)`` over an endless generator: ``itertools.islice(gen(), n)``;
- ``cycle(n)`` over a generator of 1,000 items: the generator run again
  and again, ``for _ in range(passes): for item in gen(1000)``;
- ``tuples("i")``: the raw loop building the tuple, ``(item["i"],)``;
- ``Streamer(gen).iterate()``, ``.generate()`` and ``iter(Streamer)``
  (1.0 and 3.x): the raw generator loop.

Times are this process's CPU time (``time.process_time``: on a machine
shared with other work, time spent waiting for a core does not count),
medians over interleaved rounds (each method runs in turn in each round,
so a load that comes and goes hits them alike); the ratio is the limit's
time over the run's (1.0: the run costs what the loop costs; above 1:
cheaper).  Goal (issue 24): at least 0.9 for each row.

The *floor* column is the least a run can cost where ``iter(recipe)`` must
be a generator (Keras takes generators only; a run is over once an
exception escaped it), written by hand without any check: a generator
over ``islice`` for ``take``, over ``islice(chain(...))`` for ``cycle``,
over ``zip(map(itemgetter("i"), gen))`` for ``tuples`` (which checks no
item: ours checks that each is a dict with string keys and names a bad
one); the raw loop itself for the others.  A row whose floor's ratio is
under the goal cannot reach the goal without dropping a guarantee.

``--plain`` adds, for the rows whose plain form is not a generator, that
form itself (``pescador.stage.start_plain``): what the one generator frame
that ``iter(recipe)`` adds costs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from operator import itemgetter

import pescador

from ._util import table

CYCLE_PASS = 1000  # items in each pass of the cycled generator


def small_items(n=None):
    for i in range(n) if n is not None else itertools.count():
        yield {"i": i}


def _drain(run) -> None:
    for _ in run:
        pass


def _generator(run):
    """``run`` inside one generator (what ``iter(recipe)`` must give), with nothing else."""
    yield from run


def workloads(n: int, plain: bool = False) -> list:
    """(name, the run, its limit, the limit, the floor), each a function that runs ``n`` items."""
    passes = n // CYCLE_PASS
    streamer = pescador.Streamer(small_items, n)
    recipe = pescador.stream(small_items, n)
    endless = pescador.stream(small_items)

    def raw():
        _drain(small_items(n))

    def hand_tuples():
        for item in small_items(n):
            (item["i"],)

    def hand_cycle():
        for _ in range(passes):
            for _ in small_items(CYCLE_PASS):
                pass

    def islice_floor():
        _drain(_generator(itertools.islice(small_items(), n)))

    def cycle_floor():
        runs = itertools.chain.from_iterable(small_items(CYCLE_PASS) for _ in itertools.count())
        _drain(_generator(itertools.islice(runs, passes * CYCLE_PASS)))

    def tuples_floor():
        _drain(_generator(zip(map(itemgetter("i"), small_items(n)))))

    taken, cycled = pescador.take(n, endless), pescador.cycle(passes * CYCLE_PASS, pescador.stream(small_items, CYCLE_PASS))
    tupled = pescador.tuples("i")(recipe)
    rows = [
        ("stream(gen)", lambda: _drain(recipe), "raw generator loop", raw, raw),
        ("take(n)", lambda: _drain(taken), "islice(gen(), n)", lambda: _drain(itertools.islice(small_items(), n)),
         islice_floor),
        ("cycle(n)", lambda: _drain(cycled), "gen() run again, by hand", hand_cycle, cycle_floor),
        ("tuples('i')", lambda: _drain(tupled), "raw loop making the tuple", hand_tuples, tuples_floor),
        ("Streamer(gen).iterate()", lambda: _drain(streamer.iterate()), "raw generator loop", raw, raw),
        ("Streamer(gen).generate()", lambda: _drain(streamer.generate()), "raw generator loop", raw, raw),
        ("iter(Streamer(gen))", lambda: _drain(streamer), "raw generator loop", raw, raw),
    ]
    if plain:
        from pescador.stage import start_plain

        rows[2:2] = [
            ("start_plain(take(n))", lambda: _drain(start_plain(taken)), "islice(gen(), n)", rows[1][3], rows[1][4]),
            ("start_plain(cycle(n))", lambda: _drain(start_plain(cycled)), "gen() run again, by hand", hand_cycle,
             cycle_floor),
        ]
    return rows


def measure(n: int, repeat: int, rounds: int, plain: bool = False) -> list:
    """Rows of (name, ns/item, limit, limit ns/item, ratio, floor's ratio): medians over ``rounds``
    interleaved rounds of ``repeat`` runs each."""
    cases = workloads(n, plain)
    times: dict = {}
    for _ in range(rounds):
        for name, run, limit, by_hand, floor in cases:
            for key, fn in ((name, run), ((name, limit), by_hand), ((name, "floor"), floor)):
                fn()  # (warm)
                for _ in range(repeat):
                    t0 = time.process_time()
                    fn()
                    times.setdefault(key, []).append(time.process_time() - t0)
    rows = []
    for name, _, limit, _, _ in cases:
        ours, base = statistics.median(times[name]), statistics.median(times[name, limit])
        floor = statistics.median(times[name, "floor"])
        rows.append([name, ours / n * 1e9, limit, base / n * 1e9, base / ours, base / floor])
    return rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks stream")
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain", action="store_true", help="also the plain forms, without the generator")
    args = parser.parse_args(argv)
    rows = measure(args.items, args.repeat, args.rounds, args.plain)
    load = os.getloadavg()[0]
    table(
        f"{args.items:,} small dict items a run; CPU time (process_time), medians of {args.rounds} interleaved "
        f"rounds of {args.repeat} runs; ratio = limit's time / the run's; floor = the least a generator "
        f"costs (see the docstring); load average {load:.1f}",
        ["plain run", "ns/item", "limit (hand-written)", "limit ns/item", "ratio", "floor's ratio", "goal"],
        [row + [">= 0.9"] for row in rows],
    )
