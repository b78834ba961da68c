"""Editing a saved state as a user (or an attacker) could, for the tests of the stages' field checks."""

import copy

from pescador.resume import _sign

DELETE = object()  # (as the new value in ``edited``: the field is removed)


def places(value, path=()):
    """Every place in a JSON value, the value itself first: (path, value)."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from places(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from places(v, path + (i,))


def edited(state, path, new):
    """A copy of a saved state with the value at ``path`` under its ``"stages"`` replaced by ``new`` (removed
    when ``new`` is DELETE; the whole ``"stages"`` when ``path`` is empty), signed again: a deliberate edit, so
    that the stages' own field checks are reached, not only the envelope's check."""
    state = copy.deepcopy(state)
    if not path:
        state["stages"] = None if new is DELETE else new
    else:
        node = state["stages"]
        for step in path[:-1]:
            node = node[step]
        if new is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = new
    state["check"] = _sign(state)
    return state
