"""Warm, interleaved A/B of the token draw: ``arpg.generate`` with ``token_draw="inverse-cdf"`` against the
default multinomial draw and against the published-structure sampler (concatenating cache, multinomial).

Same model, order, steps and guidance; one warm-up call each, then ``--repeats`` rounds that time each
variant once in turn; the table shows the median (min-max) seconds and the speed ratio to the reference.

    python benchmarks/token_draw.py                  # dim 512 / 8 layers and ARPG-L shapes, batch 8, 64 steps
    python benchmarks/token_draw.py --kernel         # the draw alone, at a step's logits shapes

``--kernel`` times one draw from float32 logits [rows, 16384] (the rows a step hands the sampler: batch x
cells of the step), each variant on a fresh copy of the same logits: ``torch.multinomial`` over the softmax
(the published draw), the flat inverse CDF (softmax, one cumulative sum over the whole vocabulary,
``searchsorted``: this project's draw until 2026-12-04, kept here as the baseline) and the current two-level
draw straight from the logits (``sample_tokens(..., draw="inverse-cdf", overwrite=True)``). Writes
``results/token_draw_kernel.md``.
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


def flat_inverse_cdf(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The baseline: softmax, one cumulative sum over the vocabulary, searchsorted."""
    probs = logits.softmax(-1)
    u = torch.rand(probs.shape[0], 1, generator=generator)
    cdf = probs.cumsum(-1)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_max(probs.shape[-1] - 1)


def kernel(args: argparse.Namespace) -> None:
    from arpg.sampling.guidance import sample_tokens
    from compiled import machine  # the CPU's name and vector capability

    V = 16384
    lines = ["# Token draw alone (fp32 logits [rows, 16384], warm, interleaved)", "",
             f"`python benchmarks/token_draw.py --kernel`: {machine()}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}; each call draws from a fresh copy of the same logits (the copy is timed "
             f"in every variant); median (min-max) of {args.repeats} rounds of "
             "20 calls, microseconds per draw.", "",
             "| rows | multinomial (published) | flat inverse CDF (baseline) | two-level, from logits | "
             "two-level vs flat | two-level vs multinomial |", "|---|---|---|---|---|---|"]
    for rows in (8, 48, 96, 320):
        logits = torch.randn(rows, V) * 3
        g = torch.Generator().manual_seed(0)

        def many(fn):
            return lambda: [fn(logits.clone()) for _ in range(20)]

        variants = {
            "multinomial": many(lambda x: torch.multinomial(x.softmax(-1), 1, generator=g)),
            "flat": many(lambda x: flat_inverse_cdf(x, g)),
            "two-level": many(lambda x: sample_tokens(x, draw="inverse-cdf", generator=g, overwrite=True)),
        }
        for f in variants.values():
            f()
        times = interleaved_times(variants, args.repeats)
        med = {k: statistics.median(v) / 20 * 1e6 for k, v in times.items()}
        span = {k: f"{med[k]:.0f} ({min(v) / 20 * 1e6:.0f}-{max(v) / 20 * 1e6:.0f})" for k, v in times.items()}
        lines.append(f"| {rows} | {span['multinomial']} | {span['flat']} | {span['two-level']} | "
                     f"{med['flat'] / med['two-level']:.2f}x | {med['multinomial'] / med['two-level']:.2f}x |")
        print(lines[-1], flush=True)
    Path(ROOT / "results" / "token_draw_kernel.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="dim512-8L,ARPG-L")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "results" / "token_draw.md"))
    p.add_argument("--kernel", action="store_true", help="time the draw alone (results/token_draw_kernel.md)")
    args = p.parse_args()
    if args.kernel:
        kernel(args)
        return
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
