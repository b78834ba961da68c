"""The demo runs end to end and learns."""

import re

import pytest

from pescador import demo


@pytest.mark.timeout(60)
def test_demo_trains_to_a_good_accuracy(capsys):
    assert demo.main(["--batches", "300", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "items/s" in out
    accuracy = float(re.search(r"held-out accuracy: ([0-9.]+)", out).group(1))
    assert accuracy > 0.85, out  # three well-separated classes; chance is 1/3
