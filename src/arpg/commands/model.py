"""``arpg convert`` and ``arpg info``: checkpoint utilities."""

from __future__ import annotations

import argparse

from ..weights_io import load_model, read_checkpoint, save_model
from ..config import preset_names
from ..model import count_parameters
from ..vq.io import load_tokenizer
from ._common import input_file, output_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an ARPG checkpoint (.pt, any layout) to .safetensors")
    p.add_argument("input", type=input_file, help="checkpoint: released .pt, training checkpoint or .safetensors")
    p.add_argument("output", type=output_file((".safetensors",)), help="output .safetensors file")
    p.add_argument("--preset", default=None, choices=preset_names(),
                   help="architecture preset (default: from the file or inferred)")
    p.set_defaults(func=_convert)

    p = sub.add_parser("info", help="print the architecture and parameter count of an ARPG or tokenizer checkpoint")
    p.add_argument("input", type=input_file)
    p.add_argument("--preset", default=None, choices=preset_names(), help="ARPG preset (default: from the file)")
    p.set_defaults(func=_info)


def _convert(args: argparse.Namespace) -> int:
    model = load_model(args.input, preset=args.preset)
    save_model(model, args.output)
    print(f"wrote {args.output} ({count_parameters(model):,} parameters)")
    return 0


def _is_tokenizer(path) -> bool:
    sd, _ = read_checkpoint(path)
    return "quantize.embedding.weight" in sd and "head.weight" not in sd


def _info(args: argparse.Namespace) -> int:
    if args.preset is None and _is_tokenizer(args.input):
        tok = load_tokenizer(args.input)
        c = tok.config
        print(f"{args.input}: VQ tokenizer codebook={c.codebook_size}x{c.codebook_dim} downsample={tok.downsample} "
              f"channels={c.in_channels} ch={c.ch} ch_mult={list(c.ch_mult)} params={count_parameters(tok):,}")
        return 0
    model = load_model(args.input, preset=args.preset)
    cfg = model.config
    print(f"{args.input}: ARPG dim={cfg.dim} n_layer={cfg.n_layer} n_head={cfg.n_head} vocab={cfg.vocab_size} "
          f"classes={cfg.num_classes} grid={cfg.grid_size}x{cfg.grid_size} params={count_parameters(model):,}")
    return 0
