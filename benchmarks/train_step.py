"""One training step, the published formula vs ours, side by side: seconds per step and peak memory.

A step is forward + loss + backward + gradient clipping (1.0) + AdamW (the trainer's optimizer settings) on
random codes, per-sample random orders and class dropout, with the same initial weights for both:

* ``published``: :func:`arpg.train.reference.reference_loss`, the authors' forward written out (whole
  float32 logits, ``F.cross_entropy`` over them);
* ``ours``: :meth:`arpg.ARPG.forward` with ``return_loss=True`` as ``arpg train`` runs it (head and loss in
  chunks of ``--loss-chunk`` rows, :mod:`arpg.model.lean_training`'s autograd functions that keep fewer
  activations, complex-product RoPE, fused RMSNorm); ``ours+ckpt`` adds ``--grad-checkpoint``.

Every case runs in a fresh process (so its peak resident memory, ``ru_maxrss``, is its own), and cases are
interleaved ``--repeats`` times. Allocator: glibc raises its mmap threshold each time a large block is freed,
after which freed activation buffers stay in the heap, fragmented, and the peak resident memory of later
steps measures that more than the tensors a step holds. So every case (both formulas alike) runs with
``MALLOC_MMAP_THRESHOLD_`` fixed at 1 MiB, the policy ``arpg train`` sets on a CPU
(:func:`arpg.util.memory.fix_mmap_threshold`); ``--default-malloc`` measures glibc's default instead.
The table gives medians and the ratios to the published step of the same batch and dtype. bf16 (autocast)
rows run only where the CPU multiplies bf16 natively (or ``--dtypes`` names it).

Usage::

    python benchmarks/train_step.py                          # dim 512 / 8 layers, batch 16 and 32, fp32
    python benchmarks/train_step.py --batches 32 --repeats 3 --out benchmarks/results/train_step.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))

from _timing import cpu_name  # noqa: E402

IMPLS = ("published", "ours", "ours+ckpt")
SHAPE = dict(preset="ARPG-S", n_layer=8)  # dim 512, 8 heads, 8 layers, the published vocabulary and grid


def run_case(impl: str, batch: int, dtype: str, steps: int, threads: int, chunk: int) -> dict:
    import torch

    from arpg import ARPG
    from arpg.train.optim import build_optimizer
    from arpg.train.reference import reference_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ARPG.from_preset(SHAPE["preset"], n_layer=SHAPE["n_layer"]).train()
    torch.nn.init.normal_(model.head.weight, std=0.02)  # a live head: the zero init makes the softmax trivial
    opt = build_optimizer(model, 4e-4, (0.9, 0.95), 0.05)
    cfg, n = model.config, model.config.n_cells
    amp = {"fp32": None, "bf16": torch.bfloat16}[dtype]

    def step(k: int) -> float:
        g = torch.Generator().manual_seed(k)
        tokens = torch.randint(0, cfg.vocab_size, (batch, n), generator=g)
        labels = torch.randint(0, cfg.num_classes, (batch,), generator=g)
        orders = torch.rand(batch, n, generator=g).argsort(dim=1)
        drop = torch.rand(batch, generator=g) < 0.1
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            if impl == "published":
                loss = reference_loss(model, tokens, labels, orders, drop)
            else:
                loss = model(tokens, labels, orders, drop_labels=drop, return_loss=True, loss_chunk=chunk,
                             grad_checkpoint=impl == "ours+ckpt")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    step(0)  # warm-up: first-call allocations and kernel choices
    times, losses = [], []
    for k in range(1, steps + 1):
        t = time.perf_counter()
        losses.append(step(k))
        times.append(time.perf_counter() - t)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"seconds": statistics.median(times), "peak_mb": peak_mb, "losses": losses}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[16, 32])
    p.add_argument("--dtypes", nargs="+", default=None, help="fp32 and/or bf16 (default: fp32, plus bf16 where native)")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--steps", type=int, default=2, help="timed steps per case (after one warm-up step)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats of every case (fresh processes)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loss-chunk", type=int, default=1024)
    p.add_argument("--append", action="store_true", help="add the table to --out instead of replacing it")
    p.add_argument("--default-malloc", action="store_true", help="glibc's default mmap threshold (see above)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "train_step.md")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case, print JSON
    a = p.parse_args()
    if a.case:
        impl, batch, dtype = a.case.split(",")
        print(json.dumps(run_case(impl, int(batch), dtype, a.steps, a.threads, a.loss_chunk)))
        return 0

    import torch

    from arpg.util.devices import cpu_has_native

    dtypes = a.dtypes or (["fp32", "bf16"] if cpu_has_native(torch.bfloat16) else ["fp32"])
    cases = [(i, b, d) for b in a.batches for d in dtypes for i in a.impls]
    got: dict[tuple, list[dict]] = {c: [] for c in cases}
    env = dict(os.environ)
    if a.default_malloc:
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
    else:
        env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    malloc = "glibc default malloc" if a.default_malloc else "MALLOC_MMAP_THRESHOLD_=1 MiB (both formulas)"
    for r in range(a.repeats):
        for c in cases:
            cmd = [sys.executable, __file__, "--case", ",".join(map(str, c)), "--steps", str(a.steps),
                   "--threads", str(a.threads), "--loss-chunk", str(a.loss_chunk)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            got[c].append(json.loads(out.strip().splitlines()[-1]))
            print(f"[repeat {r + 1}/{a.repeats}] {c}: {got[c][-1]['seconds']:.2f} s/step, "
                  f"{got[c][-1]['peak_mb']:.0f} MB", flush=True)

    head = (f"Training step (forward, loss, backward, clip, AdamW), dim 512 / 8 layers / 16384 codes / 256 cells, "
            f"{a.threads} threads, {cpu_name()}, torch {torch.__version__}; median of {a.repeats} fresh processes x "
            f"{a.steps} steps; loss chunk {a.loss_chunk} rows; peak = the process's peak resident memory; {malloc}.\n")
    rows = ["| batch | dtype | step | s/step | vs published | peak MB | vs published |", "|---|---|---|---|---|---|---|"]
    for b in a.batches:
        for d in dtypes:
            base = ("published", b, d)
            bs = statistics.median(x["seconds"] for x in got[base]) if base in got else None
            bm = statistics.median(x["peak_mb"] for x in got[base]) if base in got else None
            for i in a.impls:
                s = statistics.median(x["seconds"] for x in got[(i, b, d)])
                m = statistics.median(x["peak_mb"] for x in got[(i, b, d)])
                speed = f"{bs / s:.2f}x" if bs else "-"
                mem = f"{m / bm:.2f}x" if bm else "-"
                rows.append(f"| {b} | {d} | {i} | {s:.2f} | {speed} | {m:.0f} | {mem} |")
    text = head + "\n" + "\n".join(rows) + "\n"
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text if not a.append else (a.out.read_text() + "\n" + text if a.out.exists() else text))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
