"""Run code in a real Jupyter kernel, as a notebook would (nbclient + ipykernel), for the tests.

    with Kernel() as kernel:
        outputs = kernel.run("import pescador", "stats.plot()")[-1]
        assert len(images(outputs)) == 1

    outputs = run_cells(["x = 1", "print(x)"], timeout=60)   # a kernel for these cells alone
    assert printed(outputs[1]) == "1\n"

(Not ``notebook.py``: that would shadow Jupyter's own ``notebook`` package.)

A :class:`Kernel` is a fresh IPython kernel on this interpreter, started in
its own process group (so that whatever it starts, worker processes
included, goes with it), with matplotlib's inline backend (as in Jupyter),
talking over ipc sockets, with its IPython directory and connection file
in a temporary directory.
Each cell is bounded in time (``timeout`` seconds, then
``nbclient.exceptions.CellTimeoutError``); when the block ends the kernel is
shut down and its process group killed.  A cell's outputs are the outputs
a notebook would store (``nbformat`` dicts), with display updates applied.
"""

from __future__ import annotations

import base64
import os
import signal
import tempfile
import re
from collections.abc import Sequence
from typing import Any

import nbformat
from nbclient import NotebookClient

__all__ = ["Kernel", "run_cells", "images", "text", "printed", "errors"]


class Kernel:
    """A fresh Jupyter kernel for a ``with`` block: :meth:`run` executes cells in it."""

    def __init__(self, timeout: float = 60.0, cwd: str | None = None) -> None:
        self.timeout, self.cwd = timeout, cwd
        self.nb = nbformat.v4.new_notebook()
        self._tmp: Any = None
        self._setup: Any = None
        self.client: Any = None

    def __enter__(self) -> Kernel:
        self._tmp = tempfile.TemporaryDirectory(prefix="pescador-kernel-")
        env = dict(os.environ, IPYTHONDIR=os.path.join(self._tmp.name, "ipython"))
        env.pop("MPLBACKEND", None)  # (the kernel chooses matplotlib's inline backend, as in Jupyter)
        self.client = NotebookClient(self.nb, timeout=self.timeout, startup_timeout=self.timeout,
                                     kernel_name="python3", allow_errors=True, shutdown_kernel="immediate",
                                     resources={"metadata": {"path": self.cwd or self._tmp.name}})
        self.client.km = self.client.create_kernel_manager()
        self.client.km.connection_file = os.path.join(self._tmp.name, "kernel.json")
        self.client.km.transport, self.client.km.ip = "ipc", os.path.join(self._tmp.name, "kernel")  # (no TCP port)
        self._setup = self.client.setup_kernel(env=env)
        try:
            self._setup.__enter__()
        except BaseException:
            self._kill()
            raise
        return self

    def run(self, *sources: str) -> list[list[dict]]:
        """Execute each source as a cell, in order; the outputs of each cell."""
        outputs = []
        for source in sources:
            cell = nbformat.v4.new_code_cell(source)
            self.nb.cells.append(cell)
            self.client.execute_cell(cell, len(self.nb.cells) - 1)
            outputs.append(cell.outputs)
        return outputs

    def __exit__(self, *exc: Any) -> None:
        try:
            self._setup.__exit__(None, None, None)  # (shuts the kernel down)
        finally:
            self._kill()

    def _kill(self) -> None:
        km = self.client.km if self.client is not None else None
        process = getattr(getattr(km, "provisioner", None), "process", None)
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # (the kernel's own session: start_new_session)
            except (ProcessLookupError, PermissionError):
                pass
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def run_cells(cells: Sequence[str], timeout: float = 60.0, cwd: str | None = None) -> list[list[dict]]:
    """Execute ``cells`` in a kernel of their own (working directory ``cwd``), in order; each cell's outputs.

    A cell that raises does not stop the run (its outputs end with an
    ``error`` output); one that takes more than ``timeout`` seconds stops it
    with nbclient's ``CellTimeoutError``.  The kernel and whatever it started
    are killed either way.
    """
    with Kernel(timeout, cwd) as kernel:
        return kernel.run(*cells)


def images(outputs: list[dict]) -> list[bytes]:
    """The PNG images among a cell's outputs (displayed or returned), in order."""
    return [base64.b64decode(out["data"]["image/png"]) for out in outputs
            if out.get("output_type") in ("display_data", "execute_result") and "image/png" in out.get("data", {})]


def text(outputs: list[dict], name: str = "stdout") -> str:
    """What a cell wrote to a stream (``"stdout"`` or ``"stderr"``)."""
    return "".join(out["text"] for out in outputs if out.get("output_type") == "stream" and out["name"] == name)


def errors(outputs: list[dict]) -> list[str]:
    """The errors a cell raised, as ``"Name: message"``."""
    return [f"{out['ename']}: {out['evalue']}" for out in outputs if out.get("output_type") == "error"]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # (IPython colours its tracebacks)


def printed(outputs: list[dict]) -> str:
    """A cell's printed text (stdout and stderr) and its ``text/plain`` results, joined; raises for an error."""
    out = []
    for output in outputs:
        kind = output["output_type"]
        if kind == "error":
            trace = _ANSI.sub("", "\n".join(output["traceback"]))
            raise AssertionError(f"the cell raised {output['ename']}: {output['evalue']}\n{trace}")
        if kind == "stream":
            out.append(output["text"])
        elif "text/plain" in output.get("data", {}):
            out.append(output["data"]["text/plain"] + "\n")
    return "".join(out)
