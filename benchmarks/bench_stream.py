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

``--plain`` adds, for the rows whose plain form is not a generator, that
form itself (``pescador.stage.start_plain``): what the one generator frame
that ``iter(recipe)`` adds costs.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import pescador

from ._util import table

CYCLE_PASS = 1000  # items in each pass of the cycled generator


def small_items(n=None):
    for i in range(n) if n is not None else itertools.count():
        yield {"i": i}


def _drain(run) -> None:
    for _ in run:
        pass


def workloads(n: int, plain: bool = False) -> list:
    """(name, the run, its limit), each a function that runs ``n`` items."""
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

    taken, cycled = pescador.take(n, endless), pescador.cycle(passes * CYCLE_PASS, pescador.stream(small_items, CYCLE_PASS))
    tupled = pescador.tuples("i")(recipe)
    rows = [
        ("stream(gen)", lambda: _drain(recipe), "raw generator loop", raw),
        ("take(n)", lambda: _drain(taken), "islice(gen(), n)", lambda: _drain(itertools.islice(small_items(), n))),
        ("cycle(n)", lambda: _drain(cycled), "gen() run again, by hand", hand_cycle),
        ("tuples('i')", lambda: _drain(tupled), "raw loop making the tuple", hand_tuples),
        ("Streamer(gen).iterate()", lambda: _drain(streamer.iterate()), "raw generator loop", raw),
        ("Streamer(gen).generate()", lambda: _drain(streamer.generate()), "raw generator loop", raw),
        ("iter(Streamer(gen))", lambda: _drain(streamer), "raw generator loop", raw),
    ]
    if plain:
        from pescador.stage import start_plain

        rows[2:2] = [
            ("start_plain(take(n))", lambda: _drain(start_plain(taken)), "islice(gen(), n)", rows[1][3]),
            ("start_plain(cycle(n))", lambda: _drain(start_plain(cycled)), "gen() run again, by hand", hand_cycle),
        ]
    return rows


def measure(n: int, repeat: int, rounds: int, plain: bool = False) -> list:
    """Rows of (name, ns/item, limit, limit ns/item, ratio): medians over ``rounds`` interleaved rounds of
    ``repeat`` runs each."""
    cases = workloads(n, plain)
    times: dict = {}
    for _ in range(rounds):
        for name, run, limit, by_hand in cases:
            for key, fn in ((name, run), ((name, limit), by_hand)):
                fn()  # (warm)
                for _ in range(repeat):
                    t0 = time.process_time()
                    fn()
                    times.setdefault(key, []).append(time.process_time() - t0)
    rows = []
    for name, _, limit, _ in cases:
        ours, base = statistics.median(times[name]), statistics.median(times[name, limit])
        rows.append([name, ours / n * 1e9, limit, base / n * 1e9, base / ours])
    return rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks stream")
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plain", action="store_true", help="also the plain forms, without the generator")
    args = parser.parse_args(argv)
    rows = measure(args.items, args.repeat, args.rounds, args.plain)
    table(
        f"{args.items:,} small dict items a run; medians of {args.rounds} interleaved rounds of {args.repeat} runs; "
        "ratio = limit's time / the run's (goal, issue 24: >= 0.9)",
        ["plain run", "ns/item", "limit (hand-written)", "limit ns/item", "ratio", "goal"],
        [row + [">= 0.9"] for row in rows],
    )
