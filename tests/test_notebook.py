"""pescador in a Jupyter notebook: cells run in a real kernel (tests/notebook_cells.py), as a user runs them.

One kernel serves the module (starting one takes a second or two); each
test runs its own cells in it, with names of its own.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from notebook_cells import Kernel, errors, images, text

pytestmark = pytest.mark.timeout(180)

SETUP = """
import json, sys, time
import numpy as np
import matplotlib.pyplot as plt
import pescador

def slow(n, pause):
    for i in range(n):
        time.sleep(pause)
        yield {"x": np.zeros(3)}
"""


@pytest.fixture(scope="module")
def kernel():
    with Kernel(timeout=90) as k:
        (setup,) = k.run(SETUP)
        assert not errors(setup), errors(setup)
        yield k


def run(kernel, *cells):
    outputs = kernel.run(*cells)
    for source, out in zip(cells, outputs):
        assert not errors(out), f"{source}\n{errors(out)}"
    return outputs


def coloured_pixels(png: bytes) -> int:
    """How many pixels of a PNG are in colour (not white, grey or black): what the data is drawn in."""
    import matplotlib.image

    rgb = matplotlib.image.imread(io.BytesIO(png))[..., :3]
    return int(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.25).sum())


# -- figures -----------------------------------------------------------------------------------


def test_each_plot_shows_its_figure_once(kernel):
    made = run(kernel, """
stats_once, meter_once = pescador.MuxStats(), pescador.Meter()
pool_once = [pescador.stream([{"v": np.zeros(1)}] * 3) for _ in range(3)]
_ = list(pescador.measure(meter_once)(pescador.take(300, pescador.mux(2, 4, random_state=0, stats=stats_once)(pool_once))))
""")
    assert not images(made[0])
    cells = [
        "stats_once.plot()",  # the last expression: shown once, not as pyplot's figure and again as the result
        "fig_once = stats_once.plot()",  # assigned: shown once, as pyplot's figures are
        "meter_once.plot()",
        "fig_once = meter_once.plot('rows')",
        "stats_once.plot('shares')\nplt.show()",
        "fig_once = stats_once.plot('sources')\nfig_once",
    ]
    for source, outputs in zip(cells, run(kernel, *cells)):
        assert len(images(outputs)) == 1, source
    (again,) = run(kernel, "fig_once.savefig(io_buf := __import__('io').BytesIO(), format='png')\nlen(io_buf.getvalue()) > 0")
    assert not images(again) and again[0]["data"]["text/plain"] == "True"  # the figure returned still works


def test_a_plot_of_200_sources_from_two_workers_is_readable(kernel):
    (shown, measured) = run(kernel, """
stats200 = pescador.MuxStats()
pool200 = [pescador.stream([{"v": np.full(1, i)}] * 30) for i in range(200)]
recipe200 = pescador.zmq_offload(workers=2)(pescador.take(1500, pescador.mux(12, 6, random_state=0, stats=stats200)(pool200)))
assert len(list(recipe200)) == 3000
fig200 = stats200.plot()
""", """
from matplotlib.backends.backend_agg import FigureCanvasAgg
renderer = FigureCanvasAgg(fig200).get_renderer()  # (the inline backend has closed the figure)
fig200.draw(renderer)
def overlapping(labels):
    boxes = sorted((l.get_window_extent(renderer) for l in labels if l.get_visible() and l.get_text()),
                   key=lambda b: (b.x0, b.y0))
    return int(sum(a.overlaps(b) for a, b in zip(boxes, boxes[1:])))
sources200, shares200 = fig200.axes
print(json.dumps({
    "sources": overlapping(sources200.get_yticklabels()),
    "shares": overlapping(shares200.get_xticklabels()),
    "legend": [t.get_text() for t in sources200.get_legend().get_texts()],
    "workers": sorted({a.worker for a in stats200.history}),
}))
""")
    assert len(images(shown)) == 1
    found = json.loads(text(measured))
    assert found["workers"] == [0, 1]
    assert found["sources"] == 0 and found["shares"] == 0, found  # tick labels do not run into each other
    assert found["legend"] == ["worker 0", "worker 1"]  # each worker named, whichever streams it ran


def test_the_throughput_of_a_short_run_is_drawn(kernel):
    (shown, series) = run(kernel, """
meter_short = pescador.Meter()
_ = list(pescador.measure(meter_short)(pescador.stream(slow, 50, 0.01)))
meter_short.plot()
""", "print(json.dumps({'seconds': meter_short.seconds, 'items': meter_short.items}))")
    (png,) = images(shown)
    assert json.loads(text(series))["items"] == 50
    assert coloured_pixels(png) > 100  # a rate drawn over the run, not empty axes


# -- text --------------------------------------------------------------------------------------


def test_printing_the_stats_of_200_streams_shows_the_top_and_a_summary(kernel):
    short, full = run(kernel, """
stats_print = pescador.MuxStats()
pool_print = [pescador.stream([{"v": np.full(1, i)}] * 5) for i in range(200)]
_ = list(pescador.take(4000, pescador.mux(8, 4, random_state=0, stats=stats_print)(pool_print)))
print(stats_print)
""", "print(stats_print.table(top=None))")
    lines = text(short).splitlines()
    assert len(lines) <= 16, text(short)
    assert "200 streams" in text(short) and "4,000 items" in text(short)
    assert "table(top=None)" in text(short)  # says how to see every row
    assert len(text(full).splitlines()) == 1 + 200


def test_progress_without_tqdm_updates_one_line_of_output(kernel):
    (outputs,) = run(kernel, """
sys.modules["tqdm"] = None  # (as where tqdm is not installed)
try:
    for item in pescador.progress(pescador.stream(slow, 30, 0.01), total=30, interval=0.05):
        pass
finally:
    del sys.modules["tqdm"]
""")
    assert text(outputs, "stderr") == ""  # not a red box
    shown = [out for out in outputs if out["output_type"] in ("display_data", "stream")]
    assert len(shown) == 1, outputs  # one line, updated in place
    assert shown[0]["data"]["text/plain"].startswith("30/30 items (100%)")


# -- names -------------------------------------------------------------------------------------


def test_help_completion_and_signatures_of_the_mux_module(kernel):
    completed, helped, signature = run(kernel, """
from IPython.core.completer import provisionalcompleter
with provisionalcompleter():
    found = get_ipython().Completer.completions("pescador.mux.", len("pescador.mux."))
    print(json.dumps(sorted({c.text.rsplit(".", 1)[-1] for c in found if not c.text.rsplit(".", 1)[-1].startswith("_")})))
""", "help(pescador.mux)", """
import jedi
print(jedi.Interpreter("pescador.mux(", [globals()]).get_signatures()[0].to_string())
""")
    assert json.loads(text(completed)) == sorted([
        "mux", "stochastic_mux", "shuffled_mux", "round_robin_mux", "chain_mux",
        "Mux", "StochasticMux", "ShuffledMux", "RoundRobinMux", "ChainMux",
    ])
    head = "\n".join(text(helped).splitlines()[:30])
    assert "k : int" in head and "lam : float" in head, head  # mux's parameters, at the top
    shown = text(signature).strip()
    assert shown.startswith("pescador.mux(k") and shown.endswith("-> PoolTransform"), shown


@pytest.mark.parametrize("name", ["torch", "keras"])
def test_a_submodule_not_imported_yet_says_how_to_import_it(kernel, name):
    (outputs,) = kernel.run(f"pescador.{name}")
    (error,) = errors(outputs)
    assert error.startswith("AttributeError") and f"import pescador.{name}" in error, error
