"""The demo runs end to end and learns."""

import re

import pytest

from pescador import demo


@pytest.mark.timeout(60)
def test_demo_trains_to_a_good_accuracy(capsys):
    assert demo.main(["--batches", "300", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "items/s" in out and "rows/s" in out  # (items: minibatches; rows: their rows, as Meter says)
    assert "trained on 300 items (38,400 rows)" in out
    table = out.split("per noise level:")[1].splitlines()[2:7]
    assert sum(int(line.split()[1].replace(",", "")) for line in table) > 0  # the workers' mux reported
    accuracy = float(re.search(r"held-out accuracy: ([0-9.]+)", out).group(1))
    assert accuracy > 0.85, out  # three well-separated classes; chance is 1/3
