"""From files on disk to a trained model: ``python docs/tutorial_files.py [DIRECTORY]``.

Writes a small data set as .npz files, streams it through a source per
file, a mux, a buffer and two worker processes, and trains a PyTorch model
and a Keras model on it (needs ``pip install 'pescador[torch,keras]'``).
docs/tutorial_files.rst walks through it; the tests run it.
"""

import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is first imported

import numpy as np
from toolz import pipe

import pescador

FEATURES = 8


# 1. The data: one .npz file per recording session (here, made up).
def write_files(directory, files=5, rows=256, seed=0):
    """Write ``files`` .npz files of ``rows`` rows each; return their paths."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal(FEATURES)  # the rule the models should learn
    paths = []
    for i in range(files):
        X = rng.standard_normal((rows, FEATURES)).astype(np.float32)
        Y = (X @ weights > 0).astype(np.int64)
        path = os.path.join(directory, f"session{i:02d}.npz")
        np.savez(path, X=X, Y=Y)
        paths.append(path)
    return paths


# 2. A source: the rows of one file, in chunks of a few rows, once.
def read_file(path, rows=16):
    """Yield the rows of one .npz file in random order, ``rows`` at a time."""
    with np.load(path) as data:  # read when a run starts, not when the recipe is made
        X, Y = data["X"], data["Y"]
    order = np.random.default_rng(pescador.worker_info().seed).permutation(len(X))
    for start in range(0, len(X), rows):
        i = order[start:start + rows]
        yield {"X": X[i], "Y": Y[i]}


# 3. The pipeline: a recipe; nothing runs until it is iterated.
def pipeline(paths, batch_size=64, workers=2):
    """Every row of every file once per epoch, in batches of ``batch_size`` rows."""
    return pipe(
        [pescador.stream(read_file, path) for path in paths],
        pescador.mux(k=4, lam=None, with_replacement=False),  # 4 files open at once
        pescador.buffer(batch_size, strict=False),  # the last batch of an epoch may be short
        pescador.zmq_offload(workers=workers),  # each worker reads its share of the files
    )


# 4. A PyTorch training loop.
def train_torch(batches, epochs=3):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        for batch in batches:  # a new run, one epoch, each time
            x, y = torch.from_numpy(batch["X"]), torch.from_numpy(batch["Y"])
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return lambda X: model(torch.from_numpy(X)).argmax(1).numpy()


# 5. The same pipeline into Keras 3's model.fit.
def train_keras(batches, steps, epochs=3):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(2)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    # steps: the batches of an epoch (a generator's length cannot be known without running it)
    dataset = pescador.keras.dataset(pescador.keras_tuples("X", "Y")(batches), steps=steps)
    model.fit(dataset, epochs=epochs, verbose=0)
    return lambda X: np.asarray(model.predict(X, verbose=0)).argmax(1)


def main(directory):
    import pescador.keras  # noqa: F401 (after KERAS_BACKEND is set)

    *train, held_out = write_files(directory)  # 4 files to train on, 1 to test on
    batches = pipeline(train, batch_size=64)
    with np.load(held_out) as data:
        X, Y = data["X"], data["Y"]
    accuracy = {
        "PyTorch": np.mean(train_torch(batches)(X) == Y),
        "Keras": np.mean(train_keras(batches, steps=4 * 256 // 64)(X) == Y),
    }
    for name, value in accuracy.items():
        print(f"{name}: held-out accuracy {value:.2f}")
    return accuracy


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as directory:
            main(directory)
