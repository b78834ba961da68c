"""The examples of the pescador 1.0 documentation, run against this library.

Each test follows one example of ``shared/spec/pescador-1.0-docs.txt`` with
the calls, arguments and defaults it documents; data sets it downloads
(Iris, breast cancer, MNIST) are replaced by synthetic ones of the same
shape, and scikit-learn's SGDClassifier by a small numpy model.
"""

import time

import numpy as np
import pytest

import pescador
from pescador import Mux, Streamer


def noisy_samples(X, Y, batch_size=16, sigma=1.0):
    """Generate an infinite stream of noisy samples from a labeled dataset."""
    n, d = X.shape
    while True:
        i = np.random.randint(0, n, size=batch_size)
        noise = sigma * np.random.randn(batch_size, d)
        yield dict(X=X[i] + noise, Y=Y[i])


def labelled_data(n=400, d=5, seed=0):
    rng = np.random.default_rng(seed)
    Y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, d)) + 3.0 * Y[:, None]
    return X, Y


class LinearClassifier:
    """Stands in for sklearn's SGDClassifier.partial_fit / predict."""

    def __init__(self, d):
        self.w = np.zeros(d)
        self.b = 0.0

    def partial_fit(self, X, Y, classes=None):
        p = 1.0 / (1.0 + np.exp(-(X @ self.w + self.b)))
        g = p - Y
        self.w -= 0.05 * X.T @ g / len(Y)
        self.b -= 0.05 * g.mean()

    def predict(self, X):
        return (X @ self.w + self.b > 0).astype(int)


def test_stream_reuse_and_multiplexing():
    X, Y = labelled_data()
    train, test = np.arange(360), np.arange(360, 400)
    estimator = LinearClassifier(X.shape[1])
    streams = [Streamer(noisy_samples, X[train], Y[train], sigma=sigma) for sigma in [0, 0.5, 1.0, 2.0, 4.0]]
    mux_stream = Mux(streams, k=3, lam=64)
    n = 0
    for batch in mux_stream(max_batches=500):
        estimator.partial_fit(batch["X"], batch["Y"], classes=[0, 1])
        n += 1
    assert n == 500
    accuracy = np.mean(estimator.predict(X[test]) == Y[test])
    assert accuracy > 0.9


def sample_npz(npz_file, n):
    with np.load(npz_file) as data:
        n_total = len(data["X"])
        while True:
            idx = np.random.randint(n_total - n)
            yield dict(X=data["X"][idx : idx + n], Y=data["Y"][idx : idx + n])


def sample_npz_copy(npz_file, n):
    with np.load(npz_file) as data:
        n_total = len(data["X"])
        while True:
            idx = np.random.randint(n_total - n)
            yield dict(X=data["X"][idx : idx + n].copy(), Y=data["Y"][idx : idx + n].copy())


def sample_npy_mmap(npy_x, npy_y, n):
    X = np.load(npy_x, mmap_mode="c")
    Y = np.load(npy_y, mmap_mode="c")
    n_total = len(X)
    while True:
        idx = np.random.randint(n_total - n)
        yield dict(X=X[idx : idx + n], Y=Y[idx : idx + n])


@pytest.fixture
def npz_files(tmp_path):
    paths = []
    for i in range(4):
        path = tmp_path / f"song{i}.npz"
        np.savez(path, X=np.full((100, 6), i, dtype=np.float32), Y=np.full(100, i))
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("sampler", [sample_npz, sample_npz_copy])
def test_sampling_from_disk(npz_files, sampler):
    n = 16
    streams = [pescador.Streamer(sampler, npz_f, n) for npz_f in npz_files]
    mux_stream = pescador.Mux(streams, k=32, lam=16)
    seen = set()
    count = 0
    for batch in mux_stream(max_batches=200):
        assert batch["X"].shape == (16, 6)
        seen.add(int(batch["Y"][0]))
        count += 1
    assert count == 200
    assert seen == {0, 1, 2, 3}


def test_memory_mapping(tmp_path):
    pairs = []
    for i in range(3):
        x, y = tmp_path / f"x{i}.npy", tmp_path / f"y{i}.npy"
        np.save(x, np.full((50, 2), i, dtype=np.float32))
        np.save(y, np.full(50, i))
        pairs.append((str(x), str(y)))
    streams = [pescador.Streamer(sample_npy_mmap, npy_x, npy_y, 8) for (npy_x, npy_y) in pairs]
    mux_stream = pescador.Mux(streams, k=2, lam=4)
    batches = list(mux_stream(max_batches=30))
    assert len(batches) == 30
    assert all(b["X"].shape == (8, 2) and b["X"][0, 0] == b["Y"][0] for b in batches)


def test_buffered_streaming():
    X, Y = labelled_data()
    streamer = pescador.Streamer(noisy_samples, X, Y)
    minibatch_size = 128
    buffered_streamer = pescador.BufferedStreamer(streamer, minibatch_size)
    batches = list(buffered_streamer(max_batches=5))
    assert len(batches) == 5
    assert all(b["X"].shape == (128, 5) and b["Y"].shape == (128,) for b in batches)


def my_generator(n):
    for i in range(n):
        yield dict(X=np.random.randn(1, 30))


def test_buffered_streamer_api_example():
    S = pescador.Streamer(my_generator, 128)
    N = 10
    B = pescador.BufferedStreamer(S, N)
    batches = list(B())
    assert len(batches) == 12  # 128 rows -> 12 full batches; the partial one is dropped
    assert all(b["X"].shape == (10, 30) for b in batches)
    # The docstring passes my_generator itself, without its argument n: that
    # is refused at construction, saying what is missing.
    with pytest.raises(pescador.PescadorError, match="my_generator"):
        pescador.BufferedStreamer(my_generator, N)


def batch_gen():
    while True:
        yield dict(X=np.random.random((1, 10)), Y=np.atleast_2d(np.random.randint(10)))


@pytest.mark.timeout(60)
def test_zmq_example():
    n_test_batches = 1e3
    s = pescador.Streamer(batch_gen)
    zs = pescador.ZMQStreamer(s)
    t0 = time.time()
    batch_count = 0
    for batch in zs(max_batches=n_test_batches):
        batch_count += len(batch["X"])
    assert batch_count == 1000
    assert time.time() - t0 >= 0

    buffer_size = 10
    buffered_zmq = pescador.BufferedStreamer(zs, buffer_size)
    iter_count = 0
    batch_count = 0
    for batch in buffered_zmq(max_batches=n_test_batches):
        iter_count += 1
        batch_count += len(batch["X"])
    assert (iter_count, batch_count) == (1000, 10000)

    # ... and the buffer before the offload works as well
    zmq_buffered = pescador.ZMQStreamer(pescador.BufferedStreamer(s, buffer_size))
    shapes = {b["X"].shape for b in zmq_buffered(max_batches=20)}
    assert shapes == {(10, 10)}


def npz_generator(npz_path):
    npz_data = np.load(npz_path)
    X = npz_data["X"]
    y = npz_data["Y"]
    n = X.shape[0]
    while True:
        i = np.random.randint(0, n)
        yield {"X": X[np.newaxis, i], "Y": y[np.newaxis, i]}


def test_muxing_multiple_datasets(tmp_path):
    datasets = [str(tmp_path / f"dataset{i}_train.npz") for i in (1, 2, 3)]
    for i, path in enumerate(datasets):
        np.savez(path, X=np.full((30, 28, 28), i, dtype=np.uint8), Y=np.full(30, i))
    streams = [pescador.Streamer(npz_generator, x) for x in datasets]

    mux = pescador.mux.Mux(streams, k=len(streams), lam=None)
    got = [int(d["Y"][0]) for d in mux(max_batches=300)]
    assert set(got) == {0, 1, 2}

    mux = pescador.mux.Mux(streams, k=1, lam=1000)
    got = [int(d["Y"][0]) for d in mux(max_batches=300)]
    assert len(got) == 300 and set(got) <= {0, 1, 2}


def data_generator(X, y):
    X = np.atleast_2d(X)
    y = np.atleast_2d(y)
    n = X.shape[0]
    while True:
        i = np.random.randint(0, n)
        yield {"X": X[np.newaxis, i], "y": y[np.newaxis, i]}


def noisy_generator(X, y, scale=1e-1):
    noise_shape = X.shape[1:]
    for sample in data_generator(X, y):
        noise = scale * np.random.randn(*noise_shape)
        yield {"X": sample["X"] + noise, "y": sample["y"]}


def test_keras_example_pipeline_without_keras():
    """The Keras example's pipeline up to model.fit: a 2-stream mux, buffered, as tuples."""
    batch_size = 8
    X_train = np.random.rand(50, 28, 28, 1).astype("float32")
    Y_train = np.eye(10)[np.random.randint(0, 10, 50)]
    basic_stream = pescador.Streamer(data_generator, X_train, Y_train)
    noisy_stream = pescador.Streamer(noisy_generator, X_train, Y_train)
    mux = pescador.mux.Mux([basic_stream, noisy_stream], 2, lam=None)
    training_streamer = pescador.BufferedStreamer(mux, batch_size)
    gen = training_streamer.tuples("X", "y", cycle=True)
    for _ in range(5):
        x, y = next(gen)
        assert x.shape == (8, 28, 28, 1) and y.shape == (8, 10)
    gen.close()
