"""The exceptions pescador raises for misuse, for bad data and for failures in a stream."""

__all__ = ["PescadorError", "ParameterError", "ParameterTypeError", "DataError", "WorkerError"]


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
    refused: ParameterTypeError
    """


class ParameterError(PescadorError, ValueError):
    """Raised when a parameter has a bad value: both a :class:`PescadorError` and a ``ValueError``.

    For instance ``take(-1)``, ``buffer(0)``, ``mux(k=0)``, negative or
    all-zero weights, or a mode that does not exist: the type is right, the
    value is not.  ``except ValueError`` and ``except PescadorError`` both
    catch it.

    Examples
    --------
    >>> import pescador
    >>> try:
    ...     pescador.take(-1)
    ... except ValueError as exc:
    ...     print(type(exc).__name__, isinstance(exc, pescador.PescadorError))
    ParameterError True
    """


class ParameterTypeError(PescadorError, TypeError):
    """Raised when a parameter has the wrong type: both a :class:`PescadorError` and a ``TypeError``.

    For instance ``take("3")``, ``buffer(16, strict="yes")``, a key that is not
    a string, ``stream(42)``, a generator object where a generator function
    was expected, or arguments that do not fit the generator function's
    signature.  ``except TypeError`` and ``except PescadorError`` both catch
    it.

    Examples
    --------
    >>> import pescador
    >>> try:
    ...     pescador.mux(k=2.5)
    ... except TypeError as exc:
    ...     print(type(exc).__name__, isinstance(exc, pescador.PescadorError))
    ParameterTypeError True
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


class MissingKeyError(DataError, KeyError):
    """The :class:`DataError` for an item without a requested key; also a ``KeyError``, which 3.x raised.

    Examples
    --------
    >>> import pescador
    >>> try:
    ...     list(pescador.tuples([{"x": 1}], "y"))
    ... except KeyError as exc:  # (as 3.x code catches it)
    ...     print(type(exc).__name__, isinstance(exc, pescador.DataError))
    MissingKeyError True
    """

    __str__ = Exception.__str__  # (the message as written: KeyError's would quote it)


class WorkerError(PescadorError):
    """A worker's exception, as the consumer received it: the worker's traceback text.

    When a :func:`~pescador.zmq_offload` worker (or a
    :func:`~pescador.ray_offload` actor) raises, the consumer raises the same exception again, of the
    original type where it can be rebuilt, with a ``WorkerError`` as its
    ``__cause__``: so ``except ValueError`` catches a worker's ``ValueError``,
    and the printed traceback shows the worker's frames (above "The above
    exception was the direct cause of the following exception").  Where the
    exception cannot be rebuilt (its class cannot be imported here, its
    arguments cannot be pickled or do not fit its constructor, or it is not
    an ``Exception``), the consumer raises the ``WorkerError`` itself: a
    :class:`PescadorError` naming the original type, with the traceback.

    Attributes
    ----------
    type_name : str
        The original exception's type, ``module.qualname`` (empty if unknown).
    traceback_text : str
        The traceback, formatted in the worker.

    Examples
    --------
    >>> import pickle
    >>> error = WorkerError("worker 0 raised builtins.ValueError", "Traceback ...", "builtins.ValueError")
    >>> error.type_name, error.traceback_text
    ('builtins.ValueError', 'Traceback ...')
    >>> pickle.loads(pickle.dumps(error)).traceback_text
    'Traceback ...'
    """

    def __init__(self, message: str, traceback_text: str = "", type_name: str = "") -> None:
        super().__init__(message)
        self.traceback_text = traceback_text
        self.type_name = type_name

    def __reduce__(self) -> tuple:
        return type(self), (self.args[0] if self.args else "", self.traceback_text, self.type_name)
