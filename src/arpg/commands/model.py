"""``arpg convert`` and ``arpg info``: checkpoint utilities."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..model.config import preset_names
from ..model import count_parameters
from ..util.pretrained import is_pretrained_folder
from ..vq.io import load_tokenizer, save_tokenizer
from ..model.weights import load_model, read_checkpoint, save_model
from ._common import output_path, weights_source


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint (.pt, any layout) to .safetensors or a pretrained folder",
                       description="Convert an ARPG or tokenizer checkpoint: to one .safetensors file (OUT ends in "
                                   ".safetensors), or to a folder with config.json + model.safetensors + README.md "
                                   "model card, as save_pretrained writes and from_pretrained / the Hub read.")
    p.add_argument("input", type=weights_source,
                   help="checkpoint: released .pt, training checkpoint, .safetensors, a folder, or a published "
                        "name (ARPG-L, ARPG-XL, ARPG-XXL, VQ-16)")
    p.add_argument("output", type=output_path, help="OUT.safetensors, or a folder")
    p.add_argument("--preset", default=None, choices=preset_names(),
                   help="architecture preset (default: from the file or inferred)")
    p.set_defaults(func=_convert)

    p = sub.add_parser("info", help="print the architecture and parameter count of an ARPG or tokenizer checkpoint")
    p.add_argument("input", type=weights_source)
    p.add_argument("--preset", default=None, choices=preset_names(), help="ARPG preset (default: from the file)")
    p.set_defaults(func=_info)


def _is_tokenizer(path) -> bool:
    if is_pretrained_folder(path):
        return (Path(path) / "config.json").read_text().find('"model_type": "vq"') >= 0
    sd, _ = read_checkpoint(path)
    return "quantize.embedding.weight" in sd and "head.weight" not in sd


def _convert(args: argparse.Namespace) -> int:
    tokenizer = args.preset is None and _is_tokenizer(args.input)
    model = load_tokenizer(args.input) if tokenizer else load_model(args.input, preset=args.preset)
    if args.output.suffix == ".safetensors":
        (save_tokenizer if tokenizer else save_model)(model, args.output)
    else:
        model.save_pretrained(args.output, card={"notes": f"Converted by `arpg convert` from {args.input}."})
    print(f"wrote {args.output} ({count_parameters(model):,} parameters)")
    return 0


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
