"""Warm, interleaved A/B of the token draw: ``arpg.generate`` with ``token_draw="inverse-cdf"`` against the
default multinomial draw and against the published-structure sampler (concatenating cache, multinomial).

Same model, order, steps and guidance; one warm-up call each, then ``--repeats`` rounds that time each
variant once in turn; the table shows the median (min-max) seconds and the speed ratio to the reference.

    python benchmarks/token_draw.py                  # dim 512 / 8 layers and ARPG-L shapes, batch 8, 64 steps
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))
sys.path.insert(0, str(ROOT))

import arpg  # noqa: E402
from arpg.sampling.reference import reference_generate  # noqa: E402
from _timing import interleaved_times  # noqa: E402

SHAPES = {"dim512-8L": dict(preset="ARPG-S", dim=512, n_layer=8, n_head=8), "ARPG-L": dict(preset="ARPG-L")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="dim512-8L,ARPG-L")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "results" / "token_draw.md"))
    args = p.parse_args()
    torch.manual_seed(0)
    lines = ["# Token draw A/B (fp32, warm, interleaved)", "",
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
             f"batch {args.batch}, {args.steps} steps, guidance {args.cfg}, median (min-max) of {args.repeats}.", "",
             "| shape | sampler | seconds | img/s | speed vs published structure |", "|---|---|---|---|---|"]
    for name in args.shapes.split(","):
        kw = dict(SHAPES[name])
        model = arpg.ARPG.from_preset(kw.pop("preset"), **kw).eval()
        torch.nn.init.normal_(model.head.weight, std=0.02)
        labels = torch.arange(args.batch) % model.config.num_classes
        order = torch.randperm(model.config.n_cells)
        variants = {
            "published structure (concat cache, multinomial)": lambda: reference_generate(
                model, labels, order, steps=args.steps, cfg_scale=args.cfg, generator=torch.Generator().manual_seed(0)),
            "arpg.generate, multinomial": lambda: arpg.generate(
                model, labels, steps=args.steps, cfg_scale=args.cfg, order=order, generator=torch.Generator().manual_seed(0)),
            "arpg.generate, inverse-cdf": lambda: arpg.generate(
                model, labels, steps=args.steps, cfg_scale=args.cfg, order=order, token_draw="inverse-cdf",
                generator=torch.Generator().manual_seed(0)),
        }
        for f in variants.values():
            f()  # warm-up
        times = interleaved_times(variants, args.repeats)
        base = statistics.median(times["published structure (concat cache, multinomial)"])
        for k, ts in times.items():
            med = statistics.median(ts)
            lines.append(f"| {name} | {k} | {med:.2f} ({min(ts):.2f}-{max(ts):.2f}) | {args.batch / med:.2f} | "
                         f"{base / med:.2f}x |")
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
