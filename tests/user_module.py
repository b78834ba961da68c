"""A module of the user's own code, imported whole by a source (``import user_module``, then
``user_module.f(i)``): see test_fingerprint.py."""

OFFSET = 0


def f(i):
    return i + OFFSET
