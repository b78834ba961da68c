"""Shared test settings."""

from hypothesis import HealthCheck, settings

# CI runs on a shared 2-core machine: no per-example deadline (timings are
# never asserted), and a bounded number of examples to keep the suite fast.
settings.register_profile(
    "pescador",
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("pescador")
