"""``arpg extract-codes``: images -> VQ codes on disk, for ``arpg train``."""

from __future__ import annotations

import argparse

from ..data.conditions import CONDITION_KINDS
from ..data.extract import SKIPPED_NAME, ExtractConfig, extract_codes
from ._common import device_name, nonneg_int, output_dir, positive_int

EPILOG = """\
crops (published conventions, see arpg.data.crops):
  --ten-crop     ADM centre crop to int(1.1 x size), then 4 corners + centre, and the same of the mirror
                 (10 crops; LlamaGen / ARPG ImageNet training data; the default)
  --flip         centre crop and its mirror (2 crops)
  --single-crop  centre crop only (1 crop)
At training time one crop per sample is picked at random on each epoch.

examples:
  arpg extract-codes --data animal-mnist --tokenizer vq-demo.safetensors --out codes/animal
  torchrun --nproc_per_node 8 -m arpg.cli extract-codes --data /data/imagenet/train \\
      --tokenizer vq_ds16_c2i.pt --out codes/imagenet --ten-crop --image-size 256
Interrupted? Run the same command again: finished shards are kept.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract-codes", help="tokenize an image folder (or the bundled set) into code shards",
                       description="Crop and tokenize images once; write codes + labels for arpg train.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="ImageNet-style folder ROOT/<class>/<images>, 'animal-mnist', or "
                   "with --captions a caption set")
    p.add_argument("--tokenizer", required=True, help="VQ tokenizer checkpoint (.pt or .safetensors)")
    p.add_argument("--out", required=True, type=output_dir, help="output code folder")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="crop size in pixels (default: 256, the paper's, or the images' own short side when smaller "
                        "-- never an upsampling; 32 for animal-mnist)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ten-crop", dest="crops", action="store_const", const="ten", help="10 crops (default)")
    g.add_argument("--flip", dest="crops", action="store_const", const="flip", help="centre crop + mirror")
    g.add_argument("--single-crop", dest="crops", action="store_const", const="single", help="centre crop only")
    p.set_defaults(crops="ten")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images read per batch, and crops per tokenizer call "
                   "(default 32)")
    p.add_argument("--shard-size", type=positive_int, default=20_000, help="images per shard / resumable chunk")
    p.add_argument("--split", default="train", choices=["train", "heldout", "all"],
                   help="animal-mnist split: train (default), heldout, all")
    p.add_argument("--workers", type=nonneg_int, default=None,
                   help="image-decoding worker processes (default: 4, or the number of CPUs if fewer)")
    p.add_argument("--device", default="auto", type=device_name, help="cpu, cuda or auto (default)")
    p.add_argument("--condition", default=None, choices=CONDITION_KINDS,
                   help="ControlARPG: also store each crop's condition map (canny: OpenCV edges at the image size, "
                        "needs the control extra; layout: the silhouette at grid size), for arpg train --condition")
    p.add_argument("--captions", action="store_true",
                   help="text-to-image: --data is a caption set (a folder with metadata.jsonl: file_name, text; or "
                        "WebDataset .tar shards: image + .txt/.json caption); also store each caption's prompt "
                        "features, for arpg train on a text preset (needs the t2i extra)")
    p.add_argument("--text-encoder", default="google/flan-t5-xl",
                   help="with --captions: the T5 / UMT5 encoder, a Hub name or a local folder (default: the "
                        "paper's google/flan-t5-xl)")
    p.add_argument("--text-len", type=positive_int, default=120,
                   help="with --captions: prompt tokens kept per caption (longer ones are cut; default 120)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def config_from_args(args: argparse.Namespace) -> ExtractConfig:
    return ExtractConfig(data=args.data, out=str(args.out), tokenizer=args.tokenizer, image_size=args.image_size,
                         crops=args.crops, batch_size=args.batch_size, shard_size=args.shard_size,
                         split=args.split, workers=args.workers, device=args.device, progress=not args.no_progress,
                         condition=args.condition, captions=args.captions, text_encoder=args.text_encoder,
                         text_len=args.text_len)


def _run(args: argparse.Namespace) -> int:
    s = extract_codes(config_from_args(args))
    if s.index is not None:  # rank 0 reports
        i = s.index
        print(f"arpg extract-codes: {i.num_samples} images x {i.num_crops} crops -> {args.out} "
              f"({len(i.shards)} shards, grid {i.grid_size}x{i.grid_size}, vocab {i.vocab_size}, "
              f"{i.num_classes} classes" + (f", {i.condition['kind']} maps {i.condition['side']}x"
                                            f"{i.condition['side']}" if i.condition else "") +
              (f", prompt features {i.text['length']}x{i.text['dim']}" if i.text else "") + ")" + (f"; resumed, {s.chunks_done_before} shard(s) were already done"
                                             if s.chunks_done_before else ""))
        if s.skipped:
            print(f"arpg extract-codes: skipped {s.skipped} unreadable image(s); see {args.out}/{SKIPPED_NAME}")
    return 0
