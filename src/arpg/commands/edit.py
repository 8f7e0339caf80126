"""``arpg inpaint | outpaint | edit | expand``: zero-shot editing of an image file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..errors import ARPGError
from .sample import add_sampling_args, load_pair, sampling_config
from ..editing import edit_image, expand_image, inpaint_image, outpaint_image
from ..editing.canvas import MAX_CANVAS_FACTOR
from ..editing.expand import EXPAND_METHODS
from ..editing.images import read_image
from ..editing.save import save_edit
from ..util.devices import parse_dtype, pick_device
from ._common import IMAGE_SUFFIXES, apply_int8, input_file, int_range, output_file, positive_int


def _pair(text: str, what: str, minimum: int) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise ARPGError(f"{what} must be two integers HEIGHTxWIDTH like 64x96 (or 64,96), got {text!r}") from None
    if a < minimum or b < minimum:
        raise ARPGError(f"{what} {a}x{b} (height x width): both must be >= {minimum}")
    return a, b


def register(sub: argparse._SubParsersAction) -> None:
    specs = {
        "inpaint": "regenerate a masked region of an image (same class)",
        "edit": "regenerate a masked region under another class (class-conditional editing)",
        "outpaint": "extend an image to a larger canvas, window by window",
        "expand": "resolution expansion: upsample, keep a lattice of cells, regenerate the rest",
    }
    for name, help_text in specs.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("image", type=input_file,
                       help="input image (PNG/JPEG); size must be a multiple of the tokenizer's factor")
        p.add_argument("--label", type=int, required=True,
                       help="class to generate under" + (" (the NEW class)" if name == "edit" else ""))
        if name in ("inpaint", "edit"):
            p.add_argument("--mask", default=None, type=input_file,
                           help="mask PNG, same size as the image; white = regenerate")
            p.add_argument("--box", default=None, help="region to regenerate as x0,y0,x1,y1 pixels (x1, y1 exclusive)")
        if name == "outpaint":
            p.add_argument("--canvas", required=True, help="canvas size HEIGHTxWIDTH in pixels, e.g. 32x64")
            p.add_argument("--offset", default=None, help="where the image goes, Y,X pixels from the top-left "
                           "(default: centred)")
        if name != "expand":
            p.add_argument("--decode-all", action="store_true",
                           help="output the tokenizer's decode of every pixel (default: pixels outside the mask, "
                                "or the source on the canvas, come back exactly)")
        if name == "expand":
            p.add_argument("--factor", type=int_range(2), default=2, help="upsampling factor (default 2)")
            p.add_argument("--method", default="dense", choices=list(EXPAND_METHODS),
                           help="dense (default: one context at interpolated positions, a checkerboard of the "
                                "upsampled codes known), interpolate, source-lattice, windows (see arpg.editing.expand)")
        if name in ("outpaint", "expand"):
            p.add_argument("--stride", type=positive_int, default=None,
                           help="window stride in cells, at most the model's grid (default: half a window)")
            p.add_argument("--force", action="store_true", help="decode canvases beyond the size limit "
                           f"({MAX_CANVAS_FACTOR}x the model's cells), however long it takes")
        p.add_argument("--fit", action="store_true",
                       help="centre-crop and resize the image to the model's own size first (as the app does)")
        p.add_argument("--num", type=positive_int, default=1, help="number of variations")
        p.add_argument("--model", default=None, help="ARPG checkpoint (default: the shipped demo model)")
        p.add_argument("--tokenizer", default=None, help="tokenizer checkpoint (default: the shipped demo tokenizer)")
        p.add_argument("--out", type=output_file(IMAGE_SUFFIXES), default=Path(f"{name}.png"),
                       help="output image, .png/.jpg/...; variations get _1, _2, ... suffixes and a .json record "
                            "goes beside it")
        p.add_argument("--save-codes", action="store_true", help="also write the code grid as .npy beside the image")
        add_sampling_args(p)
        p.set_defaults(func=run, task=name)


def run(args: argparse.Namespace) -> int:

    if args.task in ("inpaint", "edit") and (args.mask is None) == (args.box is None):
        raise ARPGError("give exactly one of --mask PNG or --box x0,y0,x1,y1")
    canvas = _pair(args.canvas, "--canvas", 1) if args.task == "outpaint" else None
    offset = _pair(args.offset, "--offset", 0) if getattr(args, "offset", None) else None
    device = pick_device(args.device)
    model, tok = load_pair(args.model, args.tokenizer, device)
    model = apply_int8(args, model)
    sampling = sampling_config(args, model)
    kw = dict(sampling=sampling, generator=torch.Generator(device=device).manual_seed(args.seed),
              dtype=parse_dtype(args.dtype))
    image = args.image
    if args.fit:  # the app's conversion: the tokenizer's channels, the model's size
        side = model.config.grid_size * tok.downsample
        image = read_image(args.image, tok.config.in_channels, fit=(side, side))
    t0 = time.perf_counter()
    if args.task in ("inpaint", "edit"):
        fn = inpaint_image if args.task == "inpaint" else edit_image
        res = fn(model, tok, image, args.mask, args.label, box=args.box, num=args.num,
                 keep_pixels=not args.decode_all, **kw)
    elif args.task == "outpaint":
        res = outpaint_image(model, tok, image, canvas, offset, args.label, num=args.num, stride=args.stride,
                             keep_pixels=not args.decode_all, force=args.force, progress=True, **kw)
    else:
        res = expand_image(model, tok, image, args.label, factor=args.factor, num=args.num,
                           method=args.method, stride=args.stride, force=args.force, progress=True, **kw)
    seconds = time.perf_counter() - t0
    meta = save_edit(res, Path(args.out), save_codes=args.save_codes, record=dict(
        task=args.task, image=str(args.image), label=args.label, seed=args.seed, dtype=args.dtype,
        weights="int8 (weight-only)" if args.int8 else "as loaded", fit=args.fit,
        seconds=round(seconds, 3), keep_pixels=args.task != "expand" and not args.decode_all,
        sampling=sampling.to_dict(),
        steps_note="a hole or window with fewer unknown cells than steps takes one step per cell"))
    print(f"wrote {', '.join(meta['outputs'])} ({seconds:.2f} s, {meta['total_cells'] - meta['known_cells']} of "
          f"{meta['total_cells']} cells generated)")
    return 0
