"""The exception pescador raises for misuse and for failures in a stream."""

__all__ = ["PescadorError"]


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
