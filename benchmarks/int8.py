"""int8 weight-only (dynamic quantization of every nn.Linear, torch.ao) against fp32 on this CPU: speed and the
quality it costs on the shipped demo model.

Speed: warm, interleaved rounds (median (min-max) of ``--repeats``) of ``arpg.generate`` on the same model,
labels, order, steps and guidance, fp32 weights vs the same weights quantized to int8 (activations stay fp32).
Quality: 1000 demo samples (100 per class, the demo recipe, seed 0) scored by the shipped classifier (class
accuracy, Frechet distance to the held-out images in its feature space), fp32 vs int8.

    python benchmarks/int8.py          # writes benchmarks/results/int8.md
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))
sys.path.insert(0, str(ROOT))

import arpg  # noqa: E402
from arpg.demo.assets import demo_paths  # noqa: E402
from arpg.demo.classifier import load_classifier  # noqa: E402
from arpg.demo.quality import CLASSIFIER, generation_table  # noqa: E402
from _timing import interleaved_times  # noqa: E402

SHAPES = {"demo (dim 256)": None, "dim512-8L": dict(preset="ARPG-S", dim=512, n_layer=8, n_head=8),
          "ARPG-L": dict(preset="ARPG-L")}


def int8(model: arpg.ARPG) -> arpg.ARPG:
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="demo (dim 256),dim512-8L")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "results" / "int8.md"))
    args = p.parse_args()
    torch.manual_seed(0)
    demo = arpg.load_model(str(demo_paths().model)).eval()
    lines = ["# int8 weight-only (torch.ao dynamic quantization) vs fp32", "",
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
             f"batch {args.batch}, {args.steps} steps, guidance {args.cfg}, median (min-max) of {args.repeats}.", "",
             "| shape | weights | seconds | img/s | speed vs fp32 |", "|---|---|---|---|---|"]
    for name in args.shapes.split(","):
        kw = SHAPES[name]
        if kw is None:
            model = demo
        else:
            kw = dict(kw)
            model = arpg.ARPG.from_preset(kw.pop("preset"), **kw).eval()
            torch.nn.init.normal_(model.head.weight, std=0.02)
        q = int8(model)
        labels = torch.arange(args.batch) % model.config.num_classes
        order = torch.randperm(model.config.n_cells)

        def run(m):
            return lambda: arpg.generate(m, labels, steps=args.steps, cfg_scale=args.cfg, order=order,
                                         generator=torch.Generator().manual_seed(0))
        variants = {"fp32": run(model), "int8": run(q)}
        for f in variants.values():
            f()
        times = interleaved_times(variants, args.repeats)
        base = statistics.median(times["fp32"])
        for k, ts in times.items():
            med = statistics.median(ts)
            lines.append(f"| {name} | {k} | {med:.2f} ({min(ts):.2f}-{max(ts):.2f}) | {args.batch / med:.1f} | "
                         f"{base / med:.2f}x |")
            print(lines[-1], flush=True)

    tok = arpg.load_tokenizer(str(demo_paths().tokenizer))
    clf = load_classifier(CLASSIFIER)
    lines += ["", "Quality on the demo model (1000 samples, its recommended recipe, seed 0, shipped classifier):", "",
              "| weights | class accuracy | classifier Frechet | img/s |", "|---|---|---|---|"]
    for k, m in (("fp32", demo), ("int8", int8(demo))):
        row = generation_table(m, tok, clf, [{}], per_class=100, seed=0, log=lambda *_: None)[0]
        lines.append(f"| {k} | {100 * row['accuracy']:.1f}% | {row['frechet']:.2f} | {row['img_per_s']} |")
        print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
