"""Does pre-packing a Linear's weight pay on this CPU? ``F.linear`` vs oneDNN-packed and MKL-packed weights.

    python benchmarks/linear_packing.py            # about a minute on 2 CPU cores

The decoding step's matmuls are thin: (2 x batch x tokens-this-step) rows against a fixed weight. Packing
the weight once into the BLAS library's blocked layout is what ``compile="frozen"`` gets from inductor (per
graph, so one packed copy per graph); this measures the gain per matmul at the sampler's shapes (dim 512:
q|k|v 1536x512, w1|w3 2816x512, w2 512x1408, head 16384x512) so that a shared packed copy can be judged
before it is built. Float32 only (a packed bf16 weight needs native bf16, reported below). Each timing is
the median of 5 interleaved rounds of 50 calls; the error is the largest absolute difference from
``F.linear`` on fresh inputs, including a row count other than the one the weight was packed for.
Writes ``benchmarks/results/linear_packing.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from _timing import interleaved_times  # noqa: E402
from compiled import machine  # noqa: E402

SHAPES = {"q|k|v": (1536, 512), "w1|w3": (2816, 512), "w2": (512, 1408), "head": (16384, 512)}


def _calls(fn, n: int):
    def run():
        for _ in range(n):
            fn()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="16,64,256,1024", help="comma-separated row counts (2 x batch x tokens)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "linear_packing.md")
    args = ap.parse_args()
    torch.manual_seed(int(time.time()))
    lines = ["# Pre-packed Linear weights vs F.linear (float32, this CPU)", "",
             f"`python benchmarks/linear_packing.py {' '.join(sys.argv[1:])}`: {machine()}, torch "
             f"{torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Microseconds per "
             "call, median of 5 interleaved rounds of 50 calls; ratio = F.linear time / packed time.", "",
             "| weight | rows | F.linear us | oneDNN packed us | ratio | MKL packed us | ratio | max err |",
             "|---|---|---|---|---|---|---|---|"]
    has_mkl = torch.backends.mkl.is_available()
    for rows in (int(r) for r in args.rows.split(",")):
        for name, (n_out, n_in) in SHAPES.items():
            x = torch.randn(rows, n_in)
            w = torch.randn(n_out, n_in) * n_in ** -0.5
            onednn = torch.ops.mkldnn._reorder_linear_weight(w, rows)
            variants = {"plain": _calls(lambda: F.linear(x, w), 50),
                        "onednn": _calls(lambda: torch.ops.mkldnn._linear_pointwise(x, onednn, None, "none", [],
                                                                                    ""), 50)}
            if has_mkl:
                mkl = torch.ops.mkl._mkl_reorder_linear_weight(w, rows)
                variants["mkl"] = _calls(lambda: torch.ops.mkl._mkl_linear(x, mkl, w, None, rows), 50)
            for fn in variants.values():
                fn()  # warm-up
            t = {k: statistics.median(v) / 50 * 1e6 for k, v in interleaved_times(variants, 5).items()}
            other = torch.randn(rows + 7, n_in)
            err = max((torch.ops.mkldnn._linear_pointwise(z, onednn, None, "none", [], "") - F.linear(z, w))
                      .abs().max().item() for z in (torch.randn(rows, n_in), other))
            mkl_cols = (f"{t['mkl']:.0f} | {t['plain'] / t['mkl']:.2f}x" if "mkl" in t else "- | -")
            lines.append(f"| {name} {n_out}x{n_in} | {rows} | {t['plain']:.0f} | {t['onednn']:.0f} | "
                         f"{t['plain'] / t['onednn']:.2f}x | {mkl_cols} | {err:.1e} |")
            print(lines[-1], flush=True)
    lines += ["", "The oneDNN-packed weight was packed for `rows` rows; the error column includes a call with "
              "rows + 7 (one packed copy serves every step size)."]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
