"""``arpg t2i``: text-to-image generation for one prompt, to numbered PNG files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..demo.assets import load_t2i
from ..errors import ARPGError
from ..sampling.text_folder import text_encoder_for, write_prompt_images
from ..util.devices import parse_dtype, pick_device
from ._common import apply_int8, output_dir, positive_int
from .sample import add_sampling_args, sampling_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("t2i", help="generate images of a text prompt with a text-to-image model",
                       description="Write NUM images of PROMPT as OUT/0000.png, 0001.png, ... (plus grid.png and "
                                   "t2i.json, the record).")
    p.add_argument("prompt", help="what to draw, e.g. \"a red cat to the left of a blue dog\"")
    p.add_argument("--model", default=None, help="a text-to-image ARPG model (trained with arpg train on a caption "
                   "set; default: the shipped text-to-image demo, which knows the grammar of its scenes)")
    p.add_argument("--tokenizer", default=None, help="its VQ tokenizer (default: the shipped demo's)")
    p.add_argument("--text-encoder", default=None,
                   help="the prompt encoder (a Hub name or local folder; default: the one stored with the model)")
    p.add_argument("--num", type=positive_int, default=4, help="images to write (default 4)")
    p.add_argument("--out", type=output_dir, default=Path("t2i"), help="output folder (default ./t2i)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.prompt.strip():
        raise ARPGError("the prompt is empty: describe the image to generate")
    if (args.model is None) != (args.tokenizer is None):
        raise ARPGError("give both --model and --tokenizer (or neither, for the shipped text-to-image demo)")
    device = pick_device(args.device)
    model, tok = load_t2i(device, args.model, args.tokenizer)
    if not model.config.texted:
        raise ARPGError(f"{args.model or 'the model'} is a class-conditional model: use arpg sample --labels")
    model = apply_int8(args, model)
    encoder = text_encoder_for(model, args.text_encoder, device)
    meta = write_prompt_images(model, tok, encoder, args.prompt, args.num, sampling_config(args, model),
                               Path(args.out), seed=args.seed, batch_size=args.batch_size,
                               dtype=parse_dtype(args.dtype), record=dict(model=args.model or "shipped demo-t2i",
                                                                      tokenizer=args.tokenizer or "shipped demo-t2i-vq"))
    print(f"arpg t2i: {len(meta['files'])} images of {args.prompt!r} -> {args.out} ({meta['seconds']:.1f} s)")
    return 0
