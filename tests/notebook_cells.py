"""Run code cells in a real Jupyter kernel, as a notebook does, for tests of what users do in notebooks.

``run_cells(cells)`` starts a fresh IPython kernel (ipykernel, on this very
Python), executes the cells in order with nbclient, as Jupyter would, and
returns each cell's outputs (nbformat output dicts: ``stream``,
``execute_result``, ``display_data``, ``error``).  ``text(outputs)`` joins a
cell's printed text and results.

Bounded in time: the kernel's start and each cell get ``timeout`` seconds (a
cell that runs longer is an error, and the run stops).  The kernel runs in a
process group of its own (jupyter_client starts it in a new session); when
the run ends, however it ends, the kernel is shut down and whatever is left
of its process group (worker processes the cells started included) is
killed.  Nothing is written outside a temporary directory (the kernel's spec,
connection file and IPython profile).

Needs the ``test`` extra (nbclient, ipykernel).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import tempfile
from collections.abc import Sequence

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

_KERNEL = "pescador-tests"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # (IPython colours its tracebacks)


def run_cells(cells: Sequence[str], timeout: float = 60.0, cwd: str | None = None) -> list[list[dict]]:
    """Execute ``cells`` in a new kernel, in order; return each cell's outputs.

    A cell that raises does not stop the run: its outputs end with an
    ``error`` output (``ename``, ``evalue``, ``traceback``); :func:`text`
    raises for it.  A cell that takes more than ``timeout`` seconds stops the
    run with nbclient's ``CellTimeoutError``, as does a kernel that does not
    start within ``timeout``; the kernel and its processes are killed either
    way.
    """
    seconds = max(1, math.ceil(timeout))
    with tempfile.TemporaryDirectory(prefix="pescador-notebook-") as home:
        specs = os.path.join(home, "kernels")
        os.makedirs(os.path.join(specs, _KERNEL))
        with open(os.path.join(specs, _KERNEL, "kernel.json"), "w") as f:
            json.dump({
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "pescador tests",
                "language": "python",
                "env": {"IPYTHONDIR": os.path.join(home, "ipython")},
            }, f)
        manager = AsyncKernelManager(
            kernel_name=_KERNEL,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[specs], ensure_native_kernel=False),
            connection_file=os.path.join(home, "connection.json"),
            transport="ipc", ip=os.path.join(home, "kernel"),  # (sockets in the private directory, no TCP port)
        )
        groups: list = []
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
        client = NotebookClient(
            notebook, km=manager, timeout=seconds, startup_timeout=seconds, allow_errors=True,
            shutdown_kernel="graceful", resources={"metadata": {"path": cwd or home}},
            on_notebook_start=lambda notebook: groups.append(manager.provisioner.pgid),
        )
        try:
            client.execute(cleanup_kc=True)
        finally:
            for group in groups:  # (anything of the kernel's left, after its shutdown or a timeout)
                try:
                    os.killpg(group, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
    return [cell.get("outputs", []) for cell in notebook.cells]


def text(outputs: list[dict]) -> str:
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
