"""pescador.keras.Checkpoint: the data's state beside the model's weights every N batches; a job resumed from
it trains on exactly the batches of the uninterrupted job."""

import os
import sys

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

import pescador  # noqa: E402
import pescador.keras  # noqa: E402
from pescador import PescadorError  # noqa: E402

pytestmark = pytest.mark.timeout(120)

STEPS, EPOCHS = 6, 3


def batches(tag, n):
    for i in range(n):
        ident = 1000 * tag + i
        yield {"X": np.full((4, 3), ident, "float32") / 1000, "Y": np.full((4, 1), tag, "float32"),
               "id": ident}


def recipe():
    """Random turns over three streams (seeded: every job draws the same), each batch with its id."""
    pool = [pescador.stream(batches, tag, 100) for tag in range(3)]
    return pescador.keras_tuples("X", "Y")(pescador.mux(2, 4.0, random_state=5)(pool))


class Recording(pescador.keras.StreamPyDataset):
    """The dataset, recording the batches Keras trains on (each as it takes it; not the one it looks at
    first to build the model)."""

    taken: list

    def __getitem__(self, index):
        x, y = super().__getitem__(index)
        if not pescador.keras._building(sys._getframe(1)):
            self.taken.append(round(float(x[0, 0]) * 1000))
        return x, y


def dataset():
    data = pescador.keras.dataset(recipe(), steps=STEPS)
    data.__class__ = Recording
    data.taken = []
    return data


def model():
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    m.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")  # (momentum: optimizer state)
    return m


class Preempted(Exception):
    pass


class PreemptAt(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            raise Preempted


@pytest.mark.parametrize("preempt_at", [11, 15])  # 11: after the checkpoint at batch 8, in the middle of epoch 2
def test_a_preempted_job_resumed_from_its_checkpoint_trains_on_the_batches_of_the_uninterrupted_one(tmp_path, preempt_at):
    whole_data, whole = dataset(), model()
    whole.fit(whole_data, epochs=EPOCHS, verbose=0,
              callbacks=[pescador.keras.Checkpoint(tmp_path / "unused", whole_data, every=4)])
    assert len(whole_data.taken) == EPOCHS * STEPS

    head_data, head = dataset(), model()
    with pytest.raises(Preempted):
        head.fit(head_data, epochs=EPOCHS, verbose=0,
                 callbacks=[pescador.keras.Checkpoint(tmp_path / "job", head_data, every=4), PreemptAt(preempt_at)])
    saved = preempt_at // 4 * 4  # (the last checkpoint before the preemption)
    assert sorted(os.listdir(tmp_path / "job")) == ["data.json", f"model-{saved}.weights.h5"]

    tail_data, tail = dataset(), model()  # a new job: new objects, the checkpoint's files
    tail.fit(tail_data, epochs=EPOCHS, verbose=0,
             callbacks=[pescador.keras.Checkpoint(tmp_path / "job", tail_data, every=4)])
    assert head_data.taken[:saved] + tail_data.taken == whole_data.taken
    for a, b in zip(tail.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert os.listdir(tmp_path / "job") == []  # (a completed fit removes its checkpoint)


def test_fit_trains_on_the_first_batch_of_the_stream_which_keras_looks_at_first(tmp_path):
    data, m = dataset(), model()
    m.fit(data, epochs=2, verbose=0)
    expected = [round(float(x[0, 0]) * 1000) for x, _ in pescador.take(2 * STEPS, recipe())]
    assert data.taken == expected


def test_the_state_of_a_dataset_that_keeps_none_is_refused_by_name():
    data = pescador.keras.dataset(recipe(), steps=STEPS)
    with pytest.raises(PescadorError, match="keeps no state|keep no state"):
        data.state_dict()
    with pytest.raises(PescadorError, match="must be the dataset given to fit"):
        pescador.keras.Checkpoint("somewhere", recipe(), every=3)
    with pytest.raises(PescadorError, match="every"):
        pescador.keras.Checkpoint("somewhere", data, every=0)
