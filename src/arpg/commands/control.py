"""``arpg control``: controllable generation (ControlARPG) from an image's edges / layout or a condition map."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..model.control import CONDITION_GUIDANCE
from ..data.conditions import CONDITION_KINDS
from ..demo.assets import control_model_path, load_pair
from ..editing.control import control_image, image_side
from ..editing.images import read_image
from ..editing.save import save_edit
from ..errors import ARPGError
from ..util.devices import parse_dtype, pick_device
from ..util.images import to_pil
from ._common import IMAGE_SUFFIXES, apply_int8, input_file, output_file, positive_int
from .sample import add_sampling_args, sampling_config

EPILOG = """\
examples:
  arpg control photo.png --kind canny --label 3            # the shipped demo model fine-tuned on Canny edges
  arpg control --condition edges.png --label 3             # a map you made (any kind the model was trained on)
  arpg control photo.png --kind layout --label 9 --box 0,0,16,32   # control + inpaint: keep the right half
Without --model, the shipped ControlARPG demo weights of --kind (default canny) are used.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("control", help="controllable generation (ControlARPG): follow an image's edges or layout",
                       description="Generate under a condition map made from IMAGE (--kind) or given with "
                                   "--condition; with --mask/--box, keep IMAGE outside the region (control + inpaint).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", nargs="?", type=input_file, default=None,
                   help="image to take the condition from (and, with --mask/--box, the cells to keep)")
    p.add_argument("--kind", default=None, choices=CONDITION_KINDS,
                   help="condition to make from IMAGE (default: the model's own kind; canny for the shipped weights)")
    p.add_argument("--condition", default=None, type=input_file,
                   help="a condition map image you made instead (resized to the model's map size)")
    p.add_argument("--label", type=int, required=True, help="class to generate")
    p.add_argument("--mask", default=None, type=input_file, help="mask PNG, same size as IMAGE; white = generate")
    p.add_argument("--box", default=None, help="region to generate as x0,y0,x1,y1 pixels (the rest of IMAGE is kept)")
    p.add_argument("--condition-guidance", default="keep", choices=CONDITION_GUIDANCE,
                   help="what guidance's unconditional half sees: keep (class dropped, condition kept; the paper's, "
                        "default) or drop (class and condition dropped)")
    p.add_argument("--fit", action="store_true", help="centre-crop and resize IMAGE to the model's size first")
    p.add_argument("--decode-all", action="store_true",
                   help="with --mask/--box: output the tokenizer's decode of every pixel (default: kept pixels exact)")
    p.add_argument("--num", type=positive_int, default=1, help="number of variations")
    p.add_argument("--model", default=None, help="ControlARPG weights (default: the shipped demo weights of --kind)")
    p.add_argument("--tokenizer", default=None, help="tokenizer checkpoint (default: the shipped demo tokenizer)")
    p.add_argument("--out", type=output_file(IMAGE_SUFFIXES), default=Path("control.png"),
                   help="output image; variations get _1, _2, ...; the condition used is saved as *_condition.png "
                        "and a .json record goes beside it")
    p.add_argument("--save-codes", action="store_true", help="also write the code grid as .npy beside the image")
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.image is None and args.condition is None:
        raise ARPGError("give IMAGE (to make the condition from) or --condition MAP.png")
    if args.condition is not None and args.kind is not None:
        raise ARPGError("--kind makes the condition from IMAGE; with --condition the map is given: drop one")
    if (args.mask or args.box) and args.image is None:
        raise ARPGError("--mask/--box keep IMAGE's other cells: give IMAGE")
    if args.image is not None and args.condition is not None and not (args.mask or args.box):
        raise ARPGError("with --condition the map is given, so IMAGE would be unused: drop IMAGE, or add "
                        "--mask/--box to keep its other cells")
    device = pick_device(args.device)
    model_path = args.model if args.model is not None else str(control_model_path(args.kind or "canny"))
    model, tok = load_pair(model_path, args.tokenizer, device)
    model = apply_int8(args, model)
    sampling = sampling_config(args, model)
    image = args.image
    if image is not None and args.fit:
        side = image_side(model, tok)
        image = read_image(image, tok.config.in_channels, fit=(side, side))
    t0 = time.perf_counter()
    res = control_image(model, tok, args.label, image=image, kind=args.kind, condition=args.condition,
                        mask=args.mask, box=args.box, num=args.num, condition_guidance=args.condition_guidance,
                        keep_pixels=not args.decode_all, sampling=sampling,
                        generator=torch.Generator(device=device).manual_seed(args.seed), dtype=parse_dtype(args.dtype))
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    cond_path = out.with_name(f"{out.stem}_condition.png")
    meta = save_edit(res, out, save_codes=args.save_codes, record=dict(
        task="control", image=None if args.image is None else str(args.image), label=args.label,
        condition=str(args.condition) if args.condition else f"{args.kind or model.config.condition_kind} map of the image",
        condition_image=str(cond_path), condition_guidance=args.condition_guidance, model=model_path,
        inpaint=bool(args.mask or args.box), seed=args.seed, dtype=args.dtype, fit=args.fit,
        weights="int8 (weight-only)" if args.int8 else "as loaded", seconds=round(seconds, 3),
        sampling=sampling.to_dict()))
    to_pil(res["condition_view"]).save(cond_path)
    print(f"wrote {', '.join(meta['outputs'])} and {cond_path} ({seconds:.2f} s, "
          f"{meta['total_cells'] - meta['known_cells']} of {meta['total_cells']} cells generated)")
    return 0
