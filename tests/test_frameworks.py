"""PyTorch and Keras 3 adapters, against the real frameworks.

These tests need the optional extras (``pip install '.[torch,keras]'``, or
``make test-frameworks``); without them they are skipped, saying why.
"""

import collections
import importlib.util
import operator
import os
import signal
import subprocess
import sys
import time
import types
import warnings

import numpy as np
import pytest

import pescador
from pescador import buffer, keras_tuples, stream

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 on PyTorch: no TensorFlow needed

torch = pytest.importorskip("torch", reason="PyTorch is not installed (make test-frameworks installs it)")
import pescador.torch  # noqa: E402
from pescador.stage import Stage  # noqa: E402
from pescador.torch import StreamDataset, as_dataset  # noqa: E402
from test_faults import live_children  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def rows(tag, n):
    for i in range(n):
        yield {"X": np.full((1, 3), tag * 1000 + i, dtype=np.float32), "y": np.array([tag]), "name": f"{tag}-{i}"}


def pool(sizes):
    return [stream(rows, tag, n) for tag, n in enumerate(sizes)]


def test_items_become_tensors_that_share_the_arrays_memory():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    (item,) = list(as_dataset([{"X": x, "label": "a"}]))
    assert isinstance(item["X"], torch.Tensor) and item["X"].dtype == torch.float32
    assert item["X"].data_ptr() == x.ctypes.data  # no copy
    assert item["label"] == "a"


def test_as_dataset_accepts_what_stream_accepts_and_restarts():
    dataset = as_dataset(rows, 1, 3)
    assert isinstance(dataset, StreamDataset) and isinstance(dataset, torch.utils.data.IterableDataset)
    assert [d["name"] for d in dataset] == [d["name"] for d in dataset] == ["1-0", "1-1", "1-2"]
    with pytest.raises(pescador.PescadorError, match="as_dataset"):
        as_dataset(iter([]))


@pytest.mark.parametrize("workers", [2, 3])
def test_dataloader_workers_shard_a_pool_run_without_replacement(workers):
    sizes = [7, 0, 12, 5, 9]
    recipe = pescador.mux(2, None, with_replacement=False, random_state=0)(pool(sizes))
    single = collections.Counter(d["name"] for d in recipe)
    loader = torch.utils.data.DataLoader(as_dataset(recipe), batch_size=None, num_workers=workers)
    parallel = collections.Counter(d["name"] for d in loader)
    assert parallel == single and sum(single.values()) == sum(sizes)


def test_dataloader_workers_see_worker_info_with_independent_seeds():
    def who():
        info = pescador.worker_info()
        yield {"id": info.id, "count": info.count, "draw": np.random.default_rng(info.seed).random()}

    loader = torch.utils.data.DataLoader(as_dataset(who), batch_size=None, num_workers=2)
    out = list(loader)
    assert sorted(d["id"] for d in out) == [0, 1] and {d["count"] for d in out} == {2}
    assert out[0]["draw"] != out[1]["draw"]


def test_each_iteration_in_a_worker_is_an_epoch_with_its_own_seed():
    # torch gives worker id the seed base + id (a new base for each iteration of the loader, the same
    # base for every epoch of persistent workers); the dataset derives one seed per epoch from it
    def seeds(dataset, base, wid, epochs=3):
        info = types.SimpleNamespace(id=wid, num_workers=2, seed=base + wid)  # (what get_worker_info() gives)
        return [tuple(dataset._epoch_seed(info).generate_state(4)) for _ in range(epochs)]

    base = 2**63 - 1  # (the largest base torch draws: base + id goes beyond int64)
    first = seeds(StreamDataset(stream([])), base, 0)
    assert len(set(first)) == 3  # every epoch its own seed
    assert seeds(StreamDataset(stream([])), base, 0) == first  # reproducible from the base seed
    assert not set(first) & set(seeds(StreamDataset(stream([])), base, 1))  # workers differ
    assert not set(first) & set(seeds(StreamDataset(stream([])), base - 1, 1))  # never seed + i
    dataset = StreamDataset(stream([]))
    seeds(dataset, base, 0, epochs=2)
    assert seeds(dataset, 5, 0, epochs=1) == seeds(StreamDataset(stream([])), 5, 0, epochs=1)  # a new base starts over


def test_buffered_batches_train_a_torch_model():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 4)).astype(np.float32)
    Y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)

    def samples(X, Y):
        rng = np.random.default_rng(1)
        while True:
            i = rng.integers(0, len(X), size=8)
            yield {"X": X[i], "Y": Y[i]}

    batches = pescador.take(300, buffer(64)(stream(samples, X, Y)))
    model = torch.nn.Linear(4, 2)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    for batch in torch.utils.data.DataLoader(as_dataset(batches), batch_size=None):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch["X"]), batch["Y"])
        loss.backward()
        optimiser.step()
    accuracy = (model(torch.from_numpy(X)).argmax(1).numpy() == Y).mean()
    assert accuracy > 0.9


# -- issue 17: the one-call loader, double batching refused, len() ------------------------------


def batches(n, rows=4):
    """A stream over a list: n batches of `rows` rows (the list pickles, so spawned workers run it)."""
    return stream([{"X": np.full((rows, 3), i, dtype=np.float32), "i": np.full(rows, i)} for i in range(n)])


class Shard(Stage):
    """A user's stage that shares its upstream's items out between loader workers (item i to worker i % count)."""

    def __init__(self, upstream, state=None):
        self.up = self.start_upstream(upstream, state)
        self.info = pescador.worker_info()
        self.position = 0

    def __next__(self):
        while True:
            item = next(self.up)
            self.position += 1
            if (self.position - 1) % self.info.count == self.info.id:
                return item

    def state(self):
        return {"up": self.up.state()}

    @classmethod
    def run_length(cls, upstream, params, length):  # the items of the run of the worker counted
        info = pescador.worker_info()
        total = length(upstream)
        return None if total is None else len(range(info.id, total, info.count))


shard = pescador.Transform("shard", Shard, {})


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("batch_size", [1, 4])  # 1: DataLoader's default
def test_a_dataloader_that_batches_pescador_batches_again_is_refused(workers, batch_size):
    kwargs = {} if batch_size == 1 else {"batch_size": batch_size}
    loader = torch.utils.data.DataLoader(as_dataset(batches(8)), num_workers=workers, **kwargs)
    with pytest.raises(pescador.PescadorError, match=r"batches already.*batch_size=None") as info:
        next(iter(loader))
    assert "in DataLoader worker" in str(info.value) if workers else f"batch_size={batch_size})" in str(info.value)


def test_double_batching_is_refused_in_spawned_workers_too():
    loader = torch.utils.data.DataLoader(as_dataset(batches(4)), num_workers=1, multiprocessing_context="spawn")
    with pytest.raises(pescador.PescadorError, match="batches already"):
        list(loader)


def test_without_batching_or_when_told_the_items_are_samples_the_dataloader_runs():
    assert [b["X"].shape for b in torch.utils.data.DataLoader(as_dataset(batches(2)), batch_size=None)] == [(4, 3)] * 2
    samples = stream([{"x": np.array([i, i], dtype=np.float32)} for i in range(6)])
    dataset = StreamDataset(samples, collate=True)
    assert [b["x"].shape for b in torch.utils.data.DataLoader(dataset, batch_size=4)] == [(4, 2), (2, 2)]
    assert [d["i"][0].item() for d in as_dataset(batches(3))] == [0, 1, 2]  # iterated alone: no DataLoader, no check
    assert repr(dataset).endswith("collate=True)")


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_is_a_configured_dataloader_in_one_call(workers):
    loader = pescador.torch.loader(shard(batches(6)), num_workers=workers, persistent_workers=workers > 0)
    assert isinstance(loader, torch.utils.data.DataLoader) and loader.batch_size is None
    assert loader.num_workers == workers and loader.persistent_workers == (workers > 0)
    for _ in range(2):  # two epochs (persistent workers: the same processes)
        out = list(loader)
        assert all(b["X"].shape == (4, 3) and b["X"].dtype == torch.float32 for b in out)
        assert sorted(b["i"][0].item() for b in out) == list(range(6))
    assert [b["i"][0].item() for b in pescador.torch.loader(batches(3), batch_size=None)] == [0, 1, 2]


def test_loader_refuses_a_batch_size_and_bad_sources():
    with pytest.raises(pescador.PescadorError, match=r"loader: got batch_size=32.*buffer\(n\)"):
        pescador.torch.loader(batches(2), batch_size=32)
    with pytest.raises(pescador.PescadorError, match="pescador.torch.loader"):
        pescador.torch.loader(iter([]))


@pytest.mark.timeout(60)
def test_dataloader_workers_around_zmq_offload_are_refused_naming_both():
    """DataLoader workers are daemonic: zmq_offload cannot start its workers inside one."""
    recipe = pescador.zmq_offload(workers=2)(batches(4))
    with pytest.raises(pescador.PescadorError, match=r"loader: the recipe runs zmq_offload\(workers=2\).*"
                       r"num_workers=2 runs the recipe inside each DataLoader worker.*num_workers=0.*without zmq_offload"):
        pescador.torch.loader(recipe, num_workers=2)  # (before any worker starts)
    assert [b["X"].shape for b in pescador.torch.loader(recipe)] == [(4, 3)] * 8  # either one alone runs
    loader = torch.utils.data.DataLoader(as_dataset(recipe), batch_size=None, num_workers=1, timeout=30)
    with pytest.raises(pescador.PescadorError, match=r"DataLoader worker 0\).*zmq_offload\(workers=2\).*num_workers=0"):
        list(loader)


def test_len_is_the_epoch_length_where_known_and_a_type_error_elsewhere():
    loader = pescador.torch.loader(pescador.take(5, batches(7)))
    assert len(loader) == len(loader.dataset) == 5 == len(list(loader))
    assert len(pescador.torch.loader(pescador.keras_tuples("X", "i")(batches(3)))) == 3  # one-to-one stages

    def endless():
        while True:
            yield {"X": np.zeros((2, 3), np.float32)}

    unknown = pescador.torch.loader(endless)
    with pytest.raises(TypeError, match="epoch_length"):
        len(unknown)
    assert operator.length_hint(unknown, -1) == -1  # what tqdm and list() fall back on
    assert next(iter(unknown))["X"].shape == (2, 3)


@pytest.mark.parametrize("workers", [2, 3])
def test_with_workers_that_share_out_the_epoch_len_is_the_whole_loaders(workers):
    recipe = shard(batches(11))
    loader = pescador.torch.loader(recipe, num_workers=workers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = [b["i"][0].item() for b in loader]
    assert not [w for w in caught if "was reported to be" in str(w.message)]  # (torch's check of len())
    assert len(loader) == 11 and sorted(out) == list(range(11))


def test_with_workers_that_each_run_the_whole_recipe_len_counts_every_workers_batches():
    loader = pescador.torch.loader(batches(3), num_workers=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(loader) == 6 == len(list(loader))
    assert not [w for w in caught if "was reported to be" in str(w.message)]


def test_import_pescador_imports_neither_torch_nor_keras():
    code = "import sys, pescador; print(sorted(m for m in ('torch', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_keras_without_its_backend_says_to_set_keras_backend(tmp_path):
    """Keras 3 installed, KERAS_BACKEND unset, and no TensorFlow (Keras's default backend)."""
    pytest.importorskip("keras", reason="Keras is not installed (make test-frameworks installs it)")
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here: Keras's default backend imports")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)  # (no keras.json of this user's: Keras's default backend)
    code = "import pescador.keras"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: pescador.keras: Keras is installed"), last
    assert "No module named 'tensorflow'" in last and "KERAS_BACKEND=torch" in last
    assert "needs Keras 3" not in last


# -- Keras 3 ---------------------------------------------------------------------------------


def test_keras_tuples_feed_model_fit_directly():
    keras = pytest.importorskip("keras", reason="Keras is not installed (make test-frameworks installs it)")
    assert keras.backend.backend() == "torch"
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 28, 28, 1)).astype("float32")
    Y = np.eye(10, dtype="float32")[rng.integers(0, 10, 256)]

    def data_generator(X, y):  # the 1.0 docs' Keras example, with fit instead of fit_generator
        while True:
            i = np.random.randint(0, len(X))
            yield {"X": X[np.newaxis, i], "y": y[np.newaxis, i]}

    def noisy_generator(X, y, scale=1e-1):
        for sample in data_generator(X, y):
            yield {"X": sample["X"] + scale * np.random.randn(*X.shape[1:]), "y": sample["y"]}

    streams = [pescador.Streamer(data_generator, X, Y), pescador.Streamer(noisy_generator, X, Y)]
    training = pescador.BufferedStreamer(pescador.Mux(streams, 2, lam=None), 16)
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    history = model.fit(training.tuples("X", "y", cycle=True), steps_per_epoch=10, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()

    # the pipe style: keras_tuples(inputs, outputs) at the end of the pipeline
    batches = keras_tuples("X", "y")(buffer(16)(pescador.mux(2, None)([stream(data_generator, X, Y)] * 2)))
    history = model.fit(iter(batches), steps_per_epoch=5, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


# -- issue 17: Keras 3 takes pescador.keras.dataset(stream) ---------------------------------


def _keras():
    keras = pytest.importorskip("keras", reason="Keras is not installed (make test-frameworks installs it)")
    assert keras.backend.backend() == "torch"
    import pescador.keras

    return keras, pescador.keras


def tiny_model(keras):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


class StepCounter:
    """A Keras callback (built from keras.callbacks.Callback at run time) counting the batches of each epoch."""

    @staticmethod
    def make(keras):
        class Count(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.steps = []

            def on_epoch_begin(self, epoch, logs=None):
                self.steps.append(0)

            def on_train_batch_end(self, batch, logs=None):
                self.steps[-1] += 1

        return Count()


def xy_batches(n):
    return keras_tuples("X", "y")(stream([{"X": np.full((4, 3), i, "float32"), "y": np.ones((4, 1), "float32")} for i in range(n)]))


def shuffle_warnings(caught):
    return [str(w.message) for w in caught if "shuffle" in str(w.message)]


def test_model_fit_takes_a_stream_through_pescador_keras_dataset_without_steps_or_warnings():
    keras, pk = _keras()
    model, count = tiny_model(keras), StepCounter.make(keras)
    data = pk.dataset(xy_batches(5))
    assert len(data) == 5 and isinstance(data, keras.utils.PyDataset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(data, epochs=3, verbose=0, callbacks=[count], validation_data=pk.dataset(xy_batches(2)))
    assert count.steps == [5, 5, 5] and len(history.history["val_loss"]) == 3
    assert shuffle_warnings(caught) == []

    # what it replaces: a generator needs steps_per_epoch, and Keras warns that shuffle is ignored
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(iter(xy_batches(5)), steps_per_epoch=5, epochs=1, verbose=0)
    assert shuffle_warnings(caught)
    with pytest.raises(ValueError, match="Unrecognized data type"):  # (Keras chooses by type: see pescador.keras)
        model.fit(xy_batches(5), epochs=1, verbose=0)


def test_keras_dataset_takes_steps_for_an_endless_stream_and_says_when_it_needs_them():
    keras, pk = _keras()

    def endless():
        rng = np.random.default_rng(0)
        while True:
            yield {"X": rng.normal(size=(8, 3)).astype("float32"), "y": np.zeros((8, 1), "float32")}

    with pytest.raises(pescador.PescadorError, match=r"steps=N"):
        pk.dataset(keras_tuples("X", "y")(stream(endless)))
    data = pk.dataset(keras_tuples("X", "y")(stream(endless)), steps=4)
    model, count = tiny_model(keras), StepCounter.make(keras)
    model.fit(data, epochs=2, verbose=0, callbacks=[count])
    assert count.steps == [4, 4]
    for bad in (0, -1, 2.5, "3"):
        with pytest.raises(pescador.PescadorError, match="steps"):
            pk.dataset(xy_batches(2), steps=bad)
    with pytest.raises(pescador.PescadorError, match="no batch"):
        pk.dataset(stream([]))


def endless_xy():
    i = 0
    while True:
        yield {"X": np.full((4, 3), i, "float32"), "y": np.ones((4, 1), "float32")}
        i += 1


def _gone_within(seconds, condition):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


@pytest.mark.timeout(60)
def test_an_interrupted_fit_stops_its_workers_whoever_keeps_the_traceback():
    keras, pk = _keras()

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 5:
                os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C were pressed during training

    others = set(live_children())  # (another test's, say a DataLoader's persistent workers not yet collected)
    data = pk.dataset(keras_tuples("X", "y")(pescador.zmq_offload(workers=2)(stream(endless_xy))), steps=100_000)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # (a background job may ignore SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt) as kept:  # (kept: the traceback, as a notebook keeps it)
            tiny_model(keras).fit(data, epochs=1, verbose=0, callbacks=[CtrlC()])
    finally:
        signal.signal(signal.SIGINT, before)
    assert kept.value.__traceback__ is not None
    assert _gone_within(10, lambda: not set(live_children()) - others), set(live_children()) - others


def recording(upstream, into):
    """A stage in the consumer: notes the first value of each batch that passes."""
    for item in upstream:
        into.append(int(item["X"][0, 0]))
        yield item


@pytest.mark.timeout(60)
def test_a_finished_fit_holds_no_workers_and_each_fit_reads_a_run_of_its_own():
    keras, pk = _keras()
    others = set(live_children())  # (another test's, say a DataLoader's persistent workers not yet collected)
    seen = []
    offloaded = pescador.zmq_offload(workers=1)(stream(endless_xy))
    data = pk.dataset(keras_tuples("X", "y")(pescador.Transform("recording", recording, {"into": seen})(offloaded)), steps=3)
    model = tiny_model(keras)
    model.fit(data, epochs=2, verbose=0)
    first = list(seen)
    assert len(first) >= 6 and first == list(range(len(first)))  # one run across the fit's epochs
    assert _gone_within(10, lambda: not set(live_children()) - others), set(live_children()) - others  # (data is kept)
    model.fit(data, epochs=1, verbose=0)
    assert seen[len(first):] == list(range(len(seen) - len(first)))  # the next fit: a run of its own
    assert _gone_within(10, lambda: not set(live_children()) - others), set(live_children()) - others


def test_keras_dataset_runs_the_stream_in_order_and_starts_a_new_run_when_one_ends():
    _, pk = _keras()
    data = pk.dataset(xy_batches(3))
    got = [int(data[i][0][0, 0]) for i in (2, 0, 1, 1, 0, 2, 0)]  # the index Keras asks for is not used
    assert got == [0, 1, 2, 0, 1, 2, 0]
    assert len(pk.dataset(pescador.take(2, xy_batches(3)))) == 2  # epoch_length, through take
    with pytest.raises(pescador.PescadorError, match="yielded no batch"):
        pk.dataset(stream([]), steps=1)[0]
