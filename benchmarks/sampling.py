"""Sampling benchmark: randomized parallel decoding vs raster decoding vs a concatenating-cache sampler.

For each model shape (random weights), dtype, batch and step count it times three samplers on the same
model in the same process, so the ratios are meaningful even on a shared, noisy machine:

* ``arpg``    -- :func:`arpg.generate` (preallocated cache, random per-sample order, N steps);
* ``raster``  -- the same code decoding 256 steps of one token each in raster order;
* ``concat``  -- :func:`arpg.sampling.reference.reference_generate`, the published sampler's structure
  (cache grown by concatenation every step), same steps as ``arpg``.

Guidance is on (one doubled batch), as in every published number. Achieved FLOP/s counts the matmuls
(2 x weights per token or query, plus attention) and is compared with this machine's measured matmul
peak (a large square ``torch.mm``) in the same dtype. Peak memory is the growth of the process's peak
RSS (CPU) or ``torch.cuda.max_memory_allocated`` (GPU) over the sampling call, each case in a fresh
subprocess.

Usage::

    python benchmarks/sampling.py                  # the default grid (see --help), writes benchmarks/results/sampling.md
    python benchmarks/sampling.py --quick          # small preset only, a couple of minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))

import arpg  # noqa: E402
from arpg.sampling.reference import reference_generate  # noqa: E402
from arpg.sampling.schedules import step_counts  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(dtype: torch.dtype, device: str, n: int = 2048, reps: int = 8) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def sampling_flops(cfg: arpg.ARPGConfig, rows: int, counts: list[int]) -> float:
    """Matmul FLOPs of one sampling call (``rows`` = batch, doubled for guidance)."""
    d, h = cfg.dim, cfg.ffn_hidden
    L = cfg.n_layer // 2
    self_w = L * (4 * d * d + 3 * d * h) + 2 * d * d  # self blocks + shared to_k/to_v
    cross_w = L * (2 * d * d + 3 * d * h) + d * cfg.vocab_size  # cross blocks + head
    flops, length = 0.0, 1
    fed = [1] + counts[:-1]  # class token, then each step's tokens except the last step's
    for i, c in enumerate(counts):
        t = fed[i]
        length += t if i > 0 else 0
        # Pass 1 for the tokens fed before this step's queries (class token at i == 0)
        flops += 2 * t * self_w + 4 * L * t * length * d
        flops += 2 * c * cross_w + 4 * L * c * length * d
    return rows * flops


def run_case(args: argparse.Namespace) -> dict:
    device = args.device
    torch.manual_seed(0)
    with torch.device("meta"):
        model = arpg.ARPG.from_preset(args.preset)
    model = model.to_empty(device=device)
    model.reset_parameters()
    torch.nn.init.normal_(model.head.weight, std=0.02)  # a zero head makes every sample uniform noise
    model.eval()
    cfg = model.config
    n = cfg.n_cells
    labels = torch.randint(0, cfg.num_classes, (args.batch,), device=device)
    dtype = DTYPES[args.dtype]
    autocast = dtype != torch.float32
    g = torch.Generator(device=device)

    def call():
        g.manual_seed(0)
        if args.sampler == "arpg":
            return arpg.generate(model, labels, steps=args.steps, cfg_scale=4.0, generator=g, dtype=dtype,
                                 autocast=True)  # like the reference below
        if args.sampler == "raster":
            return arpg.generate(model, labels, step_schedule=[1] * n, order="raster", cfg_scale=4.0,
                                 generator=g, dtype=dtype, autocast=True)
        order = torch.randperm(n, generator=g, device=device)
        with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=autocast):
            return reference_generate(model, labels, order, steps=args.steps, cfg_scale=4.0, generator=g)

    # Memory: peak growth over the first call (RSS never shrinks, so it must be the first one).
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    call()
    _sync(device)
    dt = time.perf_counter() - t
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024
    if args.warmup:  # time a second, warm call
        t = time.perf_counter()
        call()
        _sync(device)
        dt = time.perf_counter() - t
    counts = [1] * n if args.sampler == "raster" else step_counts(n, args.steps)
    flops = sampling_flops(cfg, 2 * args.batch, counts)
    return dict(seconds=dt, img_per_s=args.batch / dt, latency_ms=1000 * dt / args.batch,
                peak_mem_mb=peak / 2**20, flops=flops, flop_per_s=flops / dt)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="ARPG-demo,ARPG-L")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--steps", default="32,64")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--samplers", default="arpg,raster,concat")
    p.add_argument("--baseline-batches", default="8", help="batches at which raster/concat baselines run")
    p.add_argument("--large-batch-limit", type=int, default=8,
                   help="for ARPG-L/XL/XXL on CPU, skip batches above this (too slow for 2 cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="ARPG-demo only, batch 8, fp32 and bf16")
    p.add_argument("--no-warmup", dest="warmup", action="store_false")
    p.add_argument("--out", default=str(ROOT / "results" / "sampling.md"))
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = p.parse_args()

    if args.case:
        c = json.loads(args.case)
        ns = argparse.Namespace(device=args.device, warmup=args.warmup, **c)
        print("RESULT " + json.dumps(run_case(ns)))
        return

    if args.quick:
        args.presets, args.batches, args.steps = "ARPG-demo", "8", "32,64"
    peaks = {d: matmul_peak(DTYPES[d], args.device) for d in args.dtypes.split(",")}
    rows = []
    for preset in args.presets.split(","):
        big = preset in ("ARPG-L", "ARPG-XL", "ARPG-XXL") and args.device == "cpu"
        for dtype in args.dtypes.split(","):
            for batch in map(int, args.batches.split(",")):
                if big and batch > args.large_batch_limit:
                    continue
                for steps in map(int, args.steps.split(",")):
                    for sampler in args.samplers.split(","):
                        if sampler != "arpg" and str(batch) not in args.baseline_batches.split(","):
                            continue
                        if sampler == "raster" and steps != max(map(int, args.steps.split(","))):
                            continue  # raster is always n_cells steps: run it once per batch
                        case = dict(preset=preset, dtype=dtype, batch=batch, steps=steps, sampler=sampler)
                        cmd = [sys.executable, __file__, "--device", args.device, "--case", json.dumps(case)]
                        if not args.warmup:
                            cmd.append("--no-warmup")
                        out = subprocess.run(cmd, capture_output=True, text=True)
                        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
                        if not line:
                            print(f"case {case} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                            continue
                        r = {**case, **json.loads(line[0][7:])}
                        r["peak_frac"] = r["flop_per_s"] / peaks[dtype]
                        rows.append(r)
                        r["n_cells"] = arpg.get_preset(preset).n_cells
                        print(f"{preset:9s} {dtype} b={batch:<3d} steps={r['n_cells'] if sampler == 'raster' else steps:<3d} "
                              f"{sampler:6s} {r['img_per_s']:8.3f} img/s  {r['latency_ms']:9.1f} ms/img  "
                              f"{r['peak_mem_mb']:8.1f} MB  {r['flop_per_s'] / 1e9:7.1f} GFLOP/s "
                              f"({100 * r['peak_frac']:.0f}% of peak)", flush=True)
    write_report(rows, peaks, args)


def write_report(rows: list[dict], peaks: dict, args: argparse.Namespace) -> None:
    lines = [
        "# Sampling benchmark",
        "",
        f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "") + ".",
        f"Command: `python benchmarks/sampling.py {' '.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "Measured matmul peak: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()) + ".",
        "Random weights; guidance on (doubled batch, scale 4); each case in a fresh process; memory from the first call, "
        + ("time from a second (warm) call." if args.warmup else "time from that same (cold) call: --no-warmup."),
        "`raster` = one token per step (256 steps for the published grid) in raster order with the same cache code; `concat` = the published sampler's",
        "structure (cache grown by concatenation). Ratios compare samplers at the same preset / dtype / batch / steps.",
        "",
        "| preset | dtype | batch | steps | sampler | img/s | ms/img | peak MB | GFLOP/s | % of peak | vs raster | vs concat |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        def ratio(kind):
            for o in rows:
                same = all(o[k] == r[k] for k in ("preset", "dtype", "batch")) and o["sampler"] == kind
                if same and (kind == "raster" or o["steps"] == r["steps"]) and r["sampler"] == "arpg":
                    return f"{r['img_per_s'] / o['img_per_s']:.2f}x"
            return ""
        steps = r["n_cells"] if r["sampler"] == "raster" else r["steps"]
        lines.append(f"| {r['preset']} | {r['dtype']} | {r['batch']} | {steps} | {r['sampler']} | {r['img_per_s']:.3f} | "
                     f"{r['latency_ms']:.1f} | {r['peak_mem_mb']:.0f} | {r['flop_per_s'] / 1e9:.1f} | "
                     f"{100 * r['peak_frac']:.0f}% | {ratio('raster')} | {ratio('concat')} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
