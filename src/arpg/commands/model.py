"""``arpg convert`` and ``arpg info``: checkpoint utilities."""

from __future__ import annotations

import argparse

from ..checkpoints import load_model, save_model
from ..model import count_parameters


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an ARPG checkpoint (.pt, any layout) to .safetensors")
    p.add_argument("input", help="checkpoint: released .pt, training checkpoint or .safetensors")
    p.add_argument("output", help="output .safetensors path")
    p.add_argument("--preset", default=None, help="architecture preset (default: from the file or inferred)")
    p.set_defaults(func=_convert)

    p = sub.add_parser("info", help="print the architecture and parameter count of an ARPG checkpoint")
    p.add_argument("input")
    p.add_argument("--preset", default=None)
    p.set_defaults(func=_info)


def _convert(args: argparse.Namespace) -> int:
    model = load_model(args.input, preset=args.preset)
    save_model(model, args.output)
    print(f"wrote {args.output} ({count_parameters(model):,} parameters)")
    return 0


def _info(args: argparse.Namespace) -> int:
    model = load_model(args.input, preset=args.preset)
    cfg = model.config
    print(f"{args.input}: ARPG dim={cfg.dim} n_layer={cfg.n_layer} n_head={cfg.n_head} vocab={cfg.vocab_size} "
          f"classes={cfg.num_classes} grid={cfg.grid_size}x{cfg.grid_size} params={count_parameters(model):,}")
    return 0
