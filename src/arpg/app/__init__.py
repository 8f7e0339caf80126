"""``arpg app``: a browser app for sampling and zero-shot editing with a painted mask (gradio, ``arpg[app]``).

:class:`AppBackend` holds the jobs (plain functions, tested without a browser); :func:`build_app` wires them
into a gradio page; :func:`make_backend` loads a model / tokenizer pair (the shipped demo weights by default).
"""

from .backend import AppBackend, make_backend
from .ui import build_app

__all__ = ["AppBackend", "build_app", "make_backend"]
