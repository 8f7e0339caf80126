"""Training throughput: tokens/s of the real trainer step, single process, fp32 vs bf16 autocast.

Each case builds a :class:`arpg.train.trainer.Trainer` on a synthetic code folder shaped for the preset
(its grid and vocabulary) and times ``--steps`` full optimizer steps after ``--warmup`` untimed ones: the
memory-mapped batch read, per-sample orders, forward, cross-entropy over every cell, backward, gradient
clipping, AdamW. Cases are interleaved and repeated ``--repeats`` times; the table gives the median.
The "data" column is the share of a step spent building the batch (reading codes, hashing orders).

Usage::

    python benchmarks/training.py                      # ARPG-tiny and ARPG-demo, fp32 and bf16
    python benchmarks/training.py --presets ARPG-demo --batch-size 64 --steps 10
    python benchmarks/training.py --presets ARPG-demo --dtypes fp32 fp32+compile --batch-size 64 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))

from arpg.model.config import get_preset  # noqa: E402
from arpg.data.codes import write_code_set  # noqa: E402
from arpg.model import count_parameters  # noqa: E402
from arpg.train.config import TrainConfig  # noqa: E402
from arpg.train.trainer import Trainer  # noqa: E402


def make_codes(root: Path, preset: str, n: int = 2048) -> None:
    cfg = get_preset(preset)
    rng = np.random.default_rng(0)
    write_code_set(root, rng.integers(0, cfg.vocab_size, (n, 2, cfg.n_cells)), rng.integers(0, cfg.num_classes, n),
                   vocab_size=cfg.vocab_size, class_names=[str(i) for i in range(cfg.num_classes)])


def time_case(trainer: Trainer, warmup: int, steps: int) -> tuple[float, float]:
    """Seconds per step and the share of it spent building batches."""
    for _ in range(warmup):
        trainer.train_step()
    t = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    per_step = (time.perf_counter() - t) / steps
    s, d = trainer.stream, trainer.dist
    t = time.perf_counter()
    for k in range(steps):
        s.batch(s.positions(k, 0, 0, 1, 1, trainer.micro_batch))
    data = (time.perf_counter() - t) / steps
    return per_step, data / per_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["ARPG-tiny", "ARPG-demo"])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: on a shared machine "
                    "spinning OpenMP threads make small models erratic)")
    ap.add_argument("--out", default=str(ROOT / "results" / "training.md"))
    ap.add_argument("--title", default="Training throughput", help="heading of the results file")
    ap.add_argument("--note", default="", help="a closing paragraph for the results file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="arpg-bench-"))
    trainers = {}
    for preset in args.presets:
        make_codes(tmp / preset, preset)
        for dt in args.dtypes:
            # "fp32+compile": the same step under torch.compile (warm-up steps absorb the compile).
            dtype, _, extra = dt.partition("+")
            if extra not in ("", "compile"):
                raise SystemExit(f"unknown dtype variant {dt!r}: use e.g. fp32, bf16, fp32+compile")
            cfg = TrainConfig(codes=str(tmp / preset), out=str(tmp / f"run-{preset}-{dt}"), preset=preset,
                              batch_size=args.batch_size, steps=10**6, warmup=0, dtype=dtype, device=args.device,
                              compile=extra == "compile", progress=False)
            trainers[(preset, dt)] = Trainer(cfg)
    results: dict[tuple[str, str], list[tuple[float, float]]] = {k: [] for k in trainers}
    for _ in range(args.repeats):
        for key, tr in trainers.items():
            results[key].append(time_case(tr, args.warmup, args.steps))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        f"# {args.title}",
        "",
        f"`python benchmarks/training.py` -- single process, {args.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CPU: {cpu} ({os.cpu_count()} cores visible), "
        f"load average {load:.1f} at the end (the machine is shared, so expect noise).",
        f"Global batch {args.batch_size}; median of {args.repeats} x {args.steps} timed steps after "
        f"{args.warmup} warm-up steps; a step = batch read + orders + forward + CE + backward + clip + AdamW.",
        "",
        "| preset | params | cells | dtype | ms / step | tokens / s | samples / s | vs fp32 | data share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    medians = {k: statistics.median(r[0] for r in runs) for k, runs in results.items()}
    for (preset, dt), runs in results.items():
        tr = trainers[(preset, dt)]
        per_step = medians[(preset, dt)]
        share = statistics.median(r[1] for r in runs)
        base = medians.get((preset, "fp32"))
        rel = f"{base / per_step:.2f}x" if base else "-"
        n = tr.model_cfg.n_cells
        lines.append(f"| {preset} | {count_parameters(tr.model):,} | {n} | {dt} | {per_step * 1e3:.1f} | "
                     f"{args.batch_size * n / per_step:,.0f} | {args.batch_size / per_step:,.1f} | {rel} | "
                     f"{share:.1%} |")
    lines.append("")
    lines.append("bf16 = `torch.autocast(dtype=torch.bfloat16)` (weights, gradients and AdamW state stay fp32), "
                 "the published setting on GPUs. On a CPU its benefit depends on the matmul sizes: the casts "
                 "cost more than they save on tiny matrices. +compile = `arpg train --compile` (torch.compile of "
                 "the training forward; its compile time is in the untimed warm-up). tokens/s counts grid cells "
                 "(predicted tokens).")
    if args.note:
        lines += ["", args.note]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
