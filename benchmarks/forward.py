"""Teacher-forced forward time of a preset (random weights, batch 1 by default), fp32 vs bf16 autocast.

    python benchmarks/forward.py --preset ARPG-L --batch 1 --repeats 3

Prints a table and writes benchmarks/results/forward.md. Median of ``--repeats`` timed calls after one warm-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))

import arpg  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="ARPG-L")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "results" / "forward.md"))
    args = p.parse_args()
    torch.manual_seed(0)
    model = arpg.ARPG.from_preset(args.preset).eval()
    cfg = model.config
    tokens = torch.randint(0, cfg.vocab_size, (args.batch, cfg.n_cells))
    labels = torch.randint(0, cfg.num_classes, (args.batch,))
    orders = arpg.random_orders(args.batch, cfg.n_cells)
    rows = []
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        times = []
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            for i in range(args.repeats + 1):
                t = time.perf_counter()
                model(tokens, labels, orders)
                if i:
                    times.append(time.perf_counter() - t)
        rows.append((name, statistics.median(times)))
    base = rows[0][1]
    lines = ["# Teacher-forced forward time", "",
             f"`python benchmarks/forward.py --preset {args.preset} --batch {args.batch}`: {platform.machine()}, "
             f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Random weights, {cfg.n_cells} tokens, "
             f"median of {args.repeats} after a warm-up.", "",
             "| preset | batch | dtype | seconds | vs fp32 |", "|---|---|---|---|---|"]
    for name, t in rows:
        lines.append(f"| {args.preset} | {args.batch} | {name} | {t:.3f} | {base / t:.2f}x |")
    print("\n".join(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
