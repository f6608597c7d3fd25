"""Progress bars that a person sees: in a terminal, in JupyterLab, under papermill and nbconvert, in the saved notebook.

`tqdm.auto` draws ipywidgets inside a kernel. papermill and nbconvert then show nothing in the terminal (the run
sits at "Executing 30%" for minutes) and save each bar as its first frame, frozen at 0 %. Inside a kernel this
module draws a text bar instead and writes it twice: to the notebook (the cell output keeps the bar's final state)
and to the kernel process's own stderr, which is the terminal of papermill or nbconvert (or the server's log under
JupyterLab). Outside a kernel it is plain tqdm.

    from dynad.progress import tqdm
    for batch in tqdm(batches, desc="inference", disable=not progress): ...
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any, TextIO

from tqdm import tqdm as _tqdm

_terminal: TextIO | None = None  # the kernel process's stderr, opened once


class _Tee(io.TextIOBase):
    """A text stream that writes to several streams."""

    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


def _kernel_terminal() -> TextIO | None:
    """In an IPython kernel: a stream on the process's original stderr, else None.

    ipykernel redirects fd 2 into the notebook and keeps the original as `sys.stderr.fileno()`; where it does not
    (no fd capture, e.g. under pytest), fd 2 is still the original and `sys.__stderr__` writes there.
    """
    global _terminal
    if _terminal is None:
        try:
            _terminal = open(os.dup(sys.stderr.fileno()), "w", buffering=1, closefd=True)
        except (OSError, io.UnsupportedOperation):
            _terminal = sys.__stderr__
    return _terminal


def tqdm(*args: Any, **kwargs: Any) -> _tqdm:
    """tqdm, drawn as text to the notebook and the terminal when running in a kernel."""
    if type(sys.stderr).__name__ != "OutStream":
        return _tqdm(*args, **kwargs)
    terminal = _kernel_terminal()
    kwargs["file"] = _Tee(sys.stderr, terminal) if terminal is not None else sys.stderr
    kwargs["leave"] = True  # the saved notebook shows each bar's final state
    kwargs.setdefault("mininterval", 1.0)  # every redraw is a message to the notebook
    kwargs.setdefault("ncols", 100)
    return _tqdm(*args, **kwargs)
