"""The recipe fingerprint (pescador._fingerprint): by value, never by address, the same in every process."""

import functools
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import pescador
from pescador import core
from pescador._fingerprint import MAX_DEPTH, examine, fingerprint
from pescador.exceptions import PescadorError
import user_module  # (a module of the user's own code, beside the tests)

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------
# Sources used below (module level: the subprocesses import them)
# ----------------------------------------------------------------------------


class Reader:
    """Data held by an instance; a bound method is the source."""

    def __init__(self, start):
        self.start = start

    def gen(self):
        for i in range(self.start, self.start + 3):
            yield {"i": np.array([i])}


class Source:
    """A callable object as a source: its type and data describe it, never its address."""

    def __init__(self, n, tags):
        self.n = n
        self.tags = tags

    def __call__(self):
        for i in range(self.n):
            yield {"i": np.array([i])}


class Slotted:
    __slots__ = ("n",)

    def __init__(self, n):
        self.n = n

    def __call__(self):
        yield from range(self.n)


def make(data):
    def gen():
        yield from data

    return gen


def counted(n=3, *, step=1):
    for i in range(0, n * step, step):
        yield {"i": np.array([i])}


def anything(*args, **kwargs):
    yield {"n": np.array([len(args) + len(kwargs)])}


def by_kind(kind):
    if kind in {"alpha", "beta", "gamma", "delta"}:  # (a frozenset among the code's constants)
        yield {"kind": kind}


def same_code_other_defaults(defaults=None, kwdefaults=None):
    """``counted`` with other ``__defaults__`` / ``__kwdefaults__`` (what a factory or an edit makes)."""
    fn = type(counted)(counted.__code__, counted.__globals__, "counted", defaults or counted.__defaults__)
    fn.__kwdefaults__ = dict(kwdefaults or counted.__kwdefaults__)
    fn.__qualname__ = counted.__qualname__
    return fn


# ----------------------------------------------------------------------------
# The data behind a function
# ----------------------------------------------------------------------------


def test_bound_methods_of_instances_holding_other_data_differ():
    assert fingerprint(pescador.stream(Reader(0).gen)) != fingerprint(pescador.stream(Reader(1000).gen))
    assert fingerprint(pescador.stream(Reader(7).gen)) == fingerprint(pescador.stream(Reader(7).gen))


def test_closures_over_other_data_differ():
    assert fingerprint(pescador.stream(make([1, 2, 3]))) != fingerprint(pescador.stream(make([1, 2, 4])))
    assert fingerprint(pescador.stream(make([1, 2, 3]))) == fingerprint(pescador.stream(make([1, 2, 3])))


def test_other_defaults_differ():
    plain = fingerprint(pescador.stream(counted))
    assert plain == fingerprint(pescador.stream(same_code_other_defaults()))
    assert plain != fingerprint(pescador.stream(same_code_other_defaults(defaults=(4,))))
    assert plain != fingerprint(pescador.stream(same_code_other_defaults(kwdefaults={"step": 2})))


def test_a_change_deep_in_a_pipeline_changes_the_fingerprint():
    def recipe(start):
        return pescador.take(5, pescador.mux(2, 4.0, random_state=1)(
            [pescador.stream(counted, 3), pescador.stream(Reader(start).gen)]))

    assert fingerprint(recipe(0)) == fingerprint(recipe(0))
    assert fingerprint(recipe(0)) != fingerprint(recipe(1))


def test_stage_parameters_and_arguments_count():
    s = pescador.stream(counted, 3)
    assert fingerprint(pescador.take(3, s)) != fingerprint(pescador.take(4, s))
    assert fingerprint(pescador.take(3, s)) != fingerprint(pescador.cycle(3, s))
    assert fingerprint(pescador.stream(counted, 3)) != fingerprint(pescador.stream(counted, 4))
    assert fingerprint(pescador.stream(counted, n=3)) != fingerprint(pescador.stream(counted, 3))
    assert fingerprint(pescador.stream(counted, n=3, step=1)) == fingerprint(pescador.stream(counted, step=1, n=3))


def test_values_of_other_types_differ():
    values = [1, 1.0, True, "1", b"1", (1,), [1], {1}, {1: 1}, np.int64(1), np.array([1]), np.array([1.0]), None]
    prints = {fingerprint(pescador.stream(counted, v)) for v in values}
    assert len(prints) == len(values)


# ----------------------------------------------------------------------------
# Callable objects, partials, other objects
# ----------------------------------------------------------------------------


def test_callable_objects_are_described_by_type_and_data():
    assert fingerprint(pescador.stream(Source(3, ["a"]))) == fingerprint(pescador.stream(Source(3, ["a"])))
    assert fingerprint(pescador.stream(Source(3, ["a"]))) != fingerprint(pescador.stream(Source(4, ["a"])))
    assert fingerprint(pescador.stream(Slotted(3))) == fingerprint(pescador.stream(Slotted(3)))
    assert fingerprint(pescador.stream(Slotted(3))) != fingerprint(pescador.stream(Slotted(4)))


def test_a_callable_object_is_named_by_its_type_not_its_address():
    s = pescador.stream(Source(3, ["a"]))
    assert core._name(Source(3, [])) == "Source"
    assert core._name(Reader(0).gen) == "Reader.gen"
    assert core._name(functools.partial(counted, 2)) == "partial(counted)"
    assert repr(s) == "stream(Source)"
    assert "0x" not in repr(pescador.stream(functools.partial(counted, 2)))


def test_partials_by_function_arguments_and_keywords():
    def fp(p):
        return fingerprint(pescador.stream(p))

    assert fp(functools.partial(counted, 3)) == fp(functools.partial(counted, 3))
    assert fp(functools.partial(counted, 3)) != fp(functools.partial(counted, 4))
    assert fp(functools.partial(counted, step=1)) != fp(functools.partial(counted, step=2))
    assert fp(functools.partial(counted, n=3, step=1)) == fp(functools.partial(counted, step=1, n=3))
    assert fp(functools.partial(Reader(0).gen)) != fp(functools.partial(Reader(1).gen))


def test_numpy_arrays_by_dtype_shape_and_every_value():
    x = np.arange(1000.0).reshape(10, 100)
    y = x.copy()
    y[7, 42] += 1e-9
    prints = {fingerprint(pescador.stream(counted, a)) for a in (x, y, x.astype(np.float32), x.reshape(100, 10))}
    assert len(prints) == 4
    assert fingerprint(pescador.stream(counted, x[:, ::2])) == fingerprint(pescador.stream(counted, x[:, ::2].copy()))
    objects = [np.array([{"a": 1}, "b"], dtype=object), np.array([{"a": 2}, "b"], dtype=object)]
    assert fingerprint(pescador.stream(counted, objects[0])) != fingerprint(pescador.stream(counted, objects[1]))
    masked = [np.ma.masked_array([1, 2], mask=m) for m in ([0, 1], [1, 0])]
    assert fingerprint(pescador.stream(counted, masked[0])) != fingerprint(pescador.stream(counted, masked[1]))


def test_large_and_unusual_arrays_and_numbers():
    big = np.zeros(300_000)  # (over 1 MB: hashed without a copy)
    other = big.copy()
    other[-1] = 1.0
    assert fingerprint(pescador.stream(anything, big)) != fingerprint(pescador.stream(anything, other))
    assert fingerprint(pescador.stream(anything, big[::3])) == fingerprint(pescador.stream(anything, big[::3].copy()))
    empties = [np.zeros(0), np.zeros((0, 3)), np.zeros(0, np.int32)]
    assert len({fingerprint(pescador.stream(anything, e)) for e in empties}) == 3
    dates = np.arange(5).astype("M8[s]")
    assert fingerprint(pescador.stream(anything, dates)) != fingerprint(pescador.stream(anything, dates + 1))
    assert fingerprint(pescador.stream(anything, 10**5000)) != fingerprint(pescador.stream(anything, 10**5000 + 1))
    assert fingerprint(pescador.stream(anything, np.random.default_rng(0))) != fingerprint(
        pescador.stream(anything, np.random.default_rng(1)))


def test_streamable_recipes_see_the_data_of_their_function():
    def recipe(data):
        return pescador.streamable(make(data))()

    assert repr(recipe([1])) == "stream(make.<locals>.gen)"
    assert fingerprint(recipe([1])) == fingerprint(recipe([1]))
    assert fingerprint(recipe([1])) != fingerprint(recipe([2]))


def test_a_shared_object_and_an_equal_copy_give_the_same_fingerprint():
    x = np.arange(5)
    assert fingerprint(pescador.stream(anything, x, x)) == fingerprint(pescador.stream(anything, x, x.copy()))
    config = {"a": [1, 2]}
    assert fingerprint(pescador.stream(anything, [config, config])) == fingerprint(
        pescador.stream(anything, [config, {"a": [1, 2]}])
    )


def test_the_class_hook_describes_an_object():
    class Shard:
        def __init__(self, path):
            self.path = path
            self.handle = threading.Lock()  # (live: would be refused without the hook)

        def __pescador_fingerprint__(self):
            return {"path": self.path}

    assert fingerprint(pescador.stream(counted, Shard("a"))) == fingerprint(pescador.stream(counted, Shard("a")))
    assert fingerprint(pescador.stream(counted, Shard("a"))) != fingerprint(pescador.stream(counted, Shard("b")))


def test_observers_by_type_only():
    meter = pescador.observe.Meter()
    recipe = pescador.observe.measure(meter)(pescador.stream(counted, 5))
    before = fingerprint(recipe)
    assert len(list(recipe)) == 5  # (the meter has changed)
    assert fingerprint(recipe) == before
    assert fingerprint(pescador.observe.measure(pescador.observe.Meter())(pescador.stream(counted, 5))) == before


# ----------------------------------------------------------------------------
# Cycles and bounds
# ----------------------------------------------------------------------------


class Node:
    def __init__(self, value):
        self.value = value
        self.next = self


def test_cycles_are_described_and_their_data_counts():
    a, b = Node(1), Node(1)
    assert fingerprint(pescador.stream(counted, a)) == fingerprint(pescador.stream(counted, b))
    b.value = 2
    assert fingerprint(pescador.stream(counted, a)) != fingerprint(pescador.stream(counted, b))
    ring = [Node(i) for i in range(3)]
    for x, y in zip(ring, ring[1:] + ring[:1]):
        x.next = y
    d = {"k": 1}
    d["self"] = d
    recipe = pescador.stream(anything, ring[0], d, [ring, d])
    assert fingerprint(recipe) == fingerprint(recipe)
    ring[2].value = 9
    assert fingerprint(recipe) != fingerprint(pescador.stream(anything, Node(0), d, [[Node(0)], d]))


def test_a_recursive_closure():
    def outer(n):
        def gen(k=n):
            if k:
                yield from gen(k - 1)
            yield k

        return gen

    assert fingerprint(pescador.stream(outer(2))) == fingerprint(pescador.stream(outer(2)))
    assert fingerprint(pescador.stream(outer(2))) != fingerprint(pescador.stream(outer(3)))


@pytest.mark.timeout(60)
def test_nesting_is_bounded():
    deep = []
    for _ in range(MAX_DEPTH + 10):
        deep = [deep]
    with pytest.raises(PescadorError, match="nests deeper"):
        fingerprint(pescador.stream(counted, deep))
    very_deep = []
    for _ in range(100_000):
        very_deep = [very_deep]
    with pytest.raises(PescadorError, match="nests deeper"):
        fingerprint(pescador.stream(counted, very_deep))


@pytest.mark.timeout(60)
def test_shared_structure_is_described_once():
    dag = [np.arange(3)]
    for _ in range(100):  # (2**100 paths)
        dag = [dag, dag]
    assert len(fingerprint(pescador.stream(counted, dag))) == 16


@pytest.mark.timeout(60)
def test_a_web_of_cycles_is_refused_not_walked_for_ever():
    nodes = [Node(i) for i in range(14)]
    for node in nodes:
        node.next = list(nodes)  # (every node refers to every other: 14! paths)
    with pytest.raises(PescadorError, match="cycles"):
        fingerprint(pescador.stream(counted, nodes[0]))


# ----------------------------------------------------------------------------
# Refusals
# ----------------------------------------------------------------------------


class Holder:
    def __init__(self):
        self.lock = threading.Lock()


def test_a_live_object_is_refused_with_its_place_and_the_fix(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("x")
    with open(path) as handle:
        cases = {
            "stream(counted) argument 1": pescador.stream(counted, handle),
            "closure of make.<locals>.gen (variable 'data')": pescador.stream(make(handle)),
            "take -> stream(anything) argument 2 -> Holder -> attribute 'lock'":
                pescador.take(2, pescador.stream(anything, 1, Holder())),
            "mux -> item [1] -> stream(counted) keyword argument 'n'":
                pescador.mux(1, 2.0)([pescador.stream(counted, 1), pescador.stream(counted, n=iter([1]))]),
            "stream(counted) argument 1 -> item [0]": pescador.stream(counted, [(i for i in range(3))]),
        }
        for where, recipe in cases.items():
            with pytest.raises(PescadorError) as caught:
                fingerprint(recipe)
            message = str(caught.value)
            assert "cannot fingerprint" in message
            assert f"{where}:" in message
            assert "pass the data instead of the live object" in message
            assert "__pescador_fingerprint__(self)" in message


# ----------------------------------------------------------------------------
# Other processes, other hash seeds
# ----------------------------------------------------------------------------

ANOTHER_PROCESS = """
import functools, sys
sys.path.insert(0, {tests!r})
import numpy as np, pescador
from pescador import core
from pescador._fingerprint import fingerprint
import test_fingerprint as t
source = pescador.stream(t.Source(3, {{"b", "a", "c", "d", "e"}}))
recipes = {{
    "callable": source,
    "sets": pescador.stream(t.anything, {{"x", "y", "z", "w"}}, frozenset({{"p", "q", "r"}}),
                            {{frozenset({{"k1", "k2", "k3"}}): 1}}),
    "code": pescador.stream(t.by_kind, "alpha"),
    "pipeline": pescador.take(5, pescador.mux(2, 4.0, random_state=1)([
        source, pescador.stream(functools.partial(t.counted, 5), step=2), pescador.stream(t.Reader(3).gen),
        pescador.stream(t.make({{"s", "t", "u"}}))])),
}}
for name, recipe in recipes.items():
    shown = "" if name == "sets" else repr(recipe)  # (a set's repr is in hash order)
    print(name, fingerprint(recipe), core._name(recipe.fn), shown)
"""


def _in_another_process(seed):
    code = ANOTHER_PROCESS.format(tests=str(TESTS))
    env = dict(os.environ, PYTHONHASHSEED=str(seed), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                          start_new_session=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(180)
def test_the_same_recipe_has_the_same_fingerprint_in_other_processes_and_hash_seeds():
    outputs = [_in_another_process(seed) for seed in (1, 2, 3)]
    assert outputs[0] == outputs[1] == outputs[2]
    assert "0x" not in outputs[0]  # (no address in any repr)
    assert len(outputs[0].splitlines()) == 4


# ----------------------------------------------------------------------------
# What the source's own code reads: its module's constants and helpers, its class
# ----------------------------------------------------------------------------

SCALE = 2  # (a module-level constant that scaled() reads, through helper())
SEEN = []  # (a module-level list that remembers() fills as it runs: a cache, not data)


def helper(i):
    return i * SCALE


def other_helper(i):
    return i * SCALE + 1


def scaled(n):
    for i in range(n):
        yield {"i": np.array([helper(i)])}


def through_a_module(n):
    for i in range(n):  # (user_module, the user's own module beside the script, imported whole)
        yield {"i": np.array([user_module.f(i)])}


def remembers(n):
    SEEN.append(n)
    yield {"n": np.array([n])}


class Scaler:
    """A callable object and bound methods whose class holds the code and a constant."""

    FACTOR = 2

    def __init__(self, n):
        self.n = n

    def factor(self):
        return self.FACTOR

    def __call__(self):
        for i in range(self.n):
            yield {"i": np.array([i * self.factor()])}

    def gen(self):
        yield from self()


def test_the_module_level_constants_and_helpers_a_source_reads_are_part_of_it(monkeypatch):
    module = sys.modules[__name__]
    before = fingerprint(pescador.stream(scaled, 3))
    monkeypatch.setattr(module, "SCALE", 3)
    assert fingerprint(pescador.stream(scaled, 3)) != before
    monkeypatch.setattr(module, "SCALE", 2)
    assert fingerprint(pescador.stream(scaled, 3)) == before
    monkeypatch.setattr(module, "helper", other_helper)
    assert fingerprint(pescador.stream(scaled, 3)) != before


def test_what_a_source_reads_through_a_module_of_the_users_own_code_is_part_of_it(monkeypatch):
    """``import mymod; mymod.f(i)`` is followed as ``from mymod import f`` is: f's code, and the constants
    f reads in its own module."""
    before = fingerprint(pescador.stream(through_a_module, 3))
    monkeypatch.setattr(user_module, "OFFSET", 1)  # (a constant that f reads, in its own module)
    assert fingerprint(pescador.stream(through_a_module, 3)) != before
    monkeypatch.setattr(user_module, "OFFSET", 0)
    assert fingerprint(pescador.stream(through_a_module, 3)) == before
    monkeypatch.setattr(user_module, "f", lambda i: i)  # (f's code)
    assert fingerprint(pescador.stream(through_a_module, 3)) != before
    monkeypatch.delattr(user_module, "f")
    assert fingerprint(pescador.stream(through_a_module, 3)) != before


def test_a_module_level_object_that_changes_as_runs_go_is_seen_by_its_type_only():
    before = fingerprint(pescador.stream(remembers, 3))
    assert len(list(pescador.stream(remembers, 3))) == 1 and SEEN
    assert fingerprint(pescador.stream(remembers, 3)) == before


@pytest.mark.parametrize("make", [lambda: pescador.stream(Scaler(3)), lambda: pescador.stream(Scaler(3).gen)])
def test_the_class_of_a_callable_object_or_a_bound_method_is_part_of_it(make, monkeypatch):
    before = fingerprint(make())
    monkeypatch.setattr(Scaler, "FACTOR", 5)
    assert fingerprint(make()) != before
    monkeypatch.setattr(Scaler, "FACTOR", 2)
    assert fingerprint(make()) == before
    monkeypatch.setattr(Scaler, "factor", lambda self: 7)
    assert fingerprint(make()) != before


# ----------------------------------------------------------------------------
# Sets, whose order depends on the hash seed
# ----------------------------------------------------------------------------


def files_of_a_set(names):
    for name in set(names):  # (the order changes with PYTHONHASHSEED)
        yield {"name": name}


def test_examine_names_the_sets_whose_order_depends_on_the_hash_seed():
    assert examine(pescador.stream(files_of_a_set, ("a", "b")))[1] == [
        "stream(files_of_a_set) function: the code of files_of_a_set builds or iterates a set"]
    assert examine(pescador.take(2, pescador.stream(anything, {"x", "y"}, frozenset({b"z"}))))[1] == [
        "take -> stream(anything) argument 1: a set of str",
        "take -> stream(anything) argument 2: a frozenset of bytes",
    ]
    assert examine(pescador.stream(anything, {1, 2.5, (3, 4)}))[1] == []  # (numbers iterate in one order)
    assert examine(pescador.stream(by_kind, "alpha"))[1] == []  # (a constant set only tested for membership)
    assert examine(pescador.stream(counted, 3))[1] == []


HASH_SEED = """
import json, sys, warnings
sys.path.insert(0, {tests!r})
import pescador, test_fingerprint as t
recipe = pescador.take(6, pescador.stream(t.files_of_a_set, tuple("abcdefghij")))
if sys.argv[1] == "save":
    run = pescador.resumable(recipe)
    head = [next(run)["name"] for _ in range(3)]
    print(json.dumps(run.state_dict()))
else:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pescador.resumable(recipe, json.loads(sys.stdin.read()))
    print(json.dumps([str(w.message) for w in caught if w.category is pescador.ResumeWarning]))
"""


def _hash_seeded(seed, mode, given=""):
    env = dict(os.environ, PYTHONHASHSEED=str(seed), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", HASH_SEED.format(tests=str(TESTS)), mode], input=given,
                          capture_output=True, text=True, env=env, timeout=60, start_new_session=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(120)
def test_a_resume_under_another_hash_seed_warns_about_the_sets_by_name():
    import json

    saved = _hash_seeded(1, "save")
    assert json.loads(_hash_seeded(1, "resume", saved)) == []
    warned = json.loads(_hash_seeded(2, "resume", saved))
    assert len(warned) == 1 and "hash seed (PYTHONHASHSEED) differs" in warned[0]
    assert "the code of files_of_a_set builds or iterates a set" in warned[0] and "sorted(" in warned[0]


# ----------------------------------------------------------------------------
# Collections of samples: one pass, by value
# ----------------------------------------------------------------------------


def samples(n, change=None):
    out = [{"X": np.full((1, 4), i, np.float32), "y": i % 3, "name": f"s{i}"} for i in range(n)]
    if change is not None:
        change(out)
    return out


def test_a_collection_of_samples_is_described_by_every_value():
    fp = lambda items: fingerprint(pescador.stream(items))  # noqa: E731
    base = fp(samples(50))
    edits = [
        lambda s: s[17]["X"].__setitem__((0, 2), 0.5),
        lambda s: s[3].__setitem__("y", 3),
        lambda s: s[3].__setitem__("y", 0.0),  # (a float where an int was)
        lambda s: s[49].__setitem__("name", "s48"),
        lambda s: s[5].__setitem__("X", s[5]["X"].astype(np.float64)),
        lambda s: s[5].__setitem__("X", s[5]["X"].reshape(4, 1)),
        lambda s: s[8].pop("name"),
        lambda s: s[8].__setitem__("extra", None),
        lambda s: s.append({"X": np.zeros((1, 4), np.float32), "y": 0, "name": "s50"}),
        lambda s: s[9].__setitem__("X", [s[9]["X"]]),  # (a list holding the array: no longer a column)
        lambda s: s.__setitem__(0, tuple(s[0].items())),
    ]
    prints = {fp(samples(50, edit)) for edit in edits}
    assert base not in prints and len(prints) == len(edits)
    # the same values, whatever their memory layout, key order, or sharing
    same = [
        lambda s: s[4].__setitem__("X", np.asfortranarray(np.full((1, 4), 4, np.float32))),
        lambda s: s[6].__setitem__("X", np.full((1, 8), 6, np.float32)[:, ::2]),
        lambda s: s.__setitem__(7, {"name": "s7", "y": 1, "X": s[7]["X"]}),
        lambda s: s.__setitem__(slice(10, 12), [s[10], s[10] | {"y": 2, "name": "s11", "X": s[10]["X"] + 1}]),
    ]
    for edit in same:
        assert fp(samples(50, edit)) == base
    shared = samples(1)[0]
    assert fp([shared, shared, [shared]]) == fp([dict(shared), dict(shared), [dict(shared)]])
    large = [{"X": np.arange(200_000.0) + i} for i in range(3)]  # (arrays hashed on their own)
    assert fp(large) != fp([large[0], large[1], {"X": large[2]["X"] + 1e-9 * (np.arange(200_000) == 7)}])
