"""``arpg app``: serve the browser app (sampling and zero-shot editing with a painted mask)."""

from __future__ import annotations

import argparse
import importlib.util
import time

from ..app import build_app, make_backend
from ..errors import ARPGError
from ..util.devices import pick_device
from ._common import device_name, input_file, int_range, weights_source


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="browser app: generate, inpaint / class-edit with a painted mask, outpaint, "
                                   "expand, control, text to image (needs arpg[app])")
    p.add_argument("--model", type=weights_source, default=None,
                   help="ARPG weights (default: the shipped demo model)")
    p.add_argument("--tokenizer", type=weights_source, default=None,
                   help="tokenizer weights (default: the shipped demo tokenizer)")
    p.add_argument("--class-names", type=input_file, default=None,
                   help="class names, one per line or a JSON list (default: the demo's animals, ImageNet's names "
                        "for 1000-class models, else 'class N')")
    p.add_argument("--control-model", type=weights_source, action="append", default=None, metavar="PATH",
                   help="ControlARPG weights for the Control tab, repeatable (default with the demo pair: the shipped "
                        "demo-control-canny and demo-control-layout)")
    p.add_argument("--t2i-model", type=weights_source, default=None,
                   help="a text-to-image model for the Text to image tab (default: the shipped text-to-image demo)")
    p.add_argument("--t2i-tokenizer", type=weights_source, default=None, help="its tokenizer")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 serves the network)")
    p.add_argument("--port", type=int_range(1, 65535), default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio share link (off by default)")
    p.add_argument("--max-queue", type=int_range(1, 1000), default=16,
                   help="jobs that may wait in the queue; one job of each tab runs at a time (default 16)")
    p.add_argument("--device", type=device_name, default="auto", help="cpu, cuda, cuda:N, mps or auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise ARPGError("the app needs gradio: pip install 'arpg[app]'")
    if (args.model is None) != (args.tokenizer is None):
        raise ARPGError("give both --model and --tokenizer (or neither, for the shipped demo pair)")
    t0 = time.perf_counter()
    backend = make_backend(args.model, args.tokenizer, device=pick_device(args.device),
                           names_file=args.class_names, control_paths=args.control_model or (),
                           t2i_model=args.t2i_model, t2i_tokenizer=args.t2i_tokenizer)
    app = build_app(backend, max_queue=args.max_queue)
    print(f"arpg app: model and page ready in {time.perf_counter() - t0:.1f} s; serving on "
          f"http://{args.host}:{args.port} (Ctrl+C stops)", flush=True)
    app.launch(server_name=args.host, server_port=args.port, share=args.share,
               max_file_size=app.arpg_limits["max_file_size"], show_error=False, quiet=True)
    return 0
