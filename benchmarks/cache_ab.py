"""Warm, interleaved A/B: preallocated-cache sampler (arpg.generate) vs the concatenating-cache reference.

Same model, order, generator and steps; one warm-up call each, then ``--repeats`` alternating timed calls.
Prints a table and writes benchmarks/results/cache_ab.md (``--out``).

With ``--dtype bf16`` both samplers run under bf16 autocast, and a third variant runs ``arpg.generate`` on
a bf16 *copy of the weights* (no autocast): at small batch, decoding reads every weight once per pass per
step, so weights stored in bf16 halve that traffic and skip autocast's per-call weight casts.

    python benchmarks/cache_ab.py --preset ARPG-S --batch 8 --steps 64
    python benchmarks/cache_ab.py --preset ARPG-L --batch 8 --steps 64 --dtype bf16 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))
sys.path.insert(0, str(ROOT))

import arpg  # noqa: E402
from arpg.sampling.reference import reference_generate  # noqa: E402
from _timing import interleaved_times  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="ARPG-S")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--out", default=str(ROOT / "results" / "cache_ab.md"))
    args = p.parse_args()
    torch.manual_seed(0)
    model = arpg.ARPG.from_preset(args.preset).eval()
    torch.nn.init.normal_(model.head.weight, std=0.02)
    cfg = model.config
    labels = torch.randint(0, cfg.num_classes, (args.batch,))
    order = torch.randperm(cfg.n_cells)

    bf16 = args.dtype == "bf16"
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def ours():
        return arpg.generate(model, labels, steps=args.steps, cfg_scale=4.0, order=order,
                             generator=torch.Generator().manual_seed(0), dtype=torch.bfloat16 if bf16 else None,
                             autocast=True)

    def concat():
        with autocast():
            return reference_generate(model, labels, order, steps=args.steps, cfg_scale=4.0,
                                      generator=torch.Generator().manual_seed(0))

    variants = {"preallocated (arpg.generate)": ours, "concatenating (reference)": concat}
    a, b = ours(), concat()  # warm-up, and the two must agree token for token
    assert torch.equal(a, b), f"samplers disagree on {(a != b).float().mean():.2%} of tokens"
    agree = ""
    if bf16:
        model_bf16 = copy.deepcopy(model).to(torch.bfloat16)

        def ours_bf16_weights():
            return arpg.generate(model_bf16, labels, steps=args.steps, cfg_scale=4.0, order=order,
                                 generator=torch.Generator().manual_seed(0))

        variants["preallocated, bf16 weights"] = ours_bf16_weights
        agree = f" bf16 weights vs autocast: {(ours_bf16_weights() == a).float().mean():.1%} of tokens equal."
    times = interleaved_times(variants, args.repeats)
    base = statistics.median(times["concatenating (reference)"])
    lines = ["# Cache A/B (warm, interleaved)", "",
             f"`python benchmarks/cache_ab.py --preset {args.preset} --batch {args.batch} --steps {args.steps} "
             f"--dtype {args.dtype} --repeats {args.repeats}`: "
             f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; guidance 4, {args.dtype}{' autocast' if bf16 else ''}, {args.repeats} alternating calls.{agree}", "",
             "| sampler | median s / call | all calls | speed vs concatenating |", "|---|---|---|---|"]
    for name, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"| {name} | {med:.3f} | {', '.join(f'{t:.2f}' for t in ts)} | {base / med:.2f}x |")
    print("\n".join(lines))
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
