"""The exceptions pescador raises for misuse, for bad data and for failures in a stream."""

__all__ = ["PescadorError", "DataError"]


class PescadorError(Exception):
    """Raised when a stream is built or used wrongly, or when it fails.

    The message says what was wrong and what was expected.  Catch it as
    ``pescador.PescadorError`` (also importable from
    ``pescador.exceptions``).

    Examples
    --------
    >>> import pescador
    >>> try:
    ...     pescador.stream(42)
    ... except pescador.PescadorError as exc:
    ...     print("refused:", type(exc).__name__)
    refused: PescadorError
    """


class DataError(PescadorError):
    """Raised when an item is not what a stage needs (pescador 3.x's name).

    For instance an item that is not a dict of arrays reaching ``tuples``,
    ``keras_tuples`` or ``buffer``, or an item without a requested key.  A
    subclass of :class:`PescadorError`, so code that catches either works.

    Examples
    --------
    >>> import pescador
    >>> try:
    ...     list(pescador.tuples([{"x": 1}], "y"))
    ... except pescador.DataError as exc:
    ...     print(exc)
    tuples: item 0 has no key 'y'; its keys are ['x']
    """
