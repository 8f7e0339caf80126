"""Does pre-packing a Linear's weight pay on this CPU? ``F.linear`` vs oneDNN-packed and MKL-packed weights.

    python benchmarks/linear_packing.py                        # dim 512, float32: about a minute on 2 cores
    python benchmarks/linear_packing.py --dims 512,1024 --dtypes fp32,bf16 --out results/linear_packing_amx.md

The decoding step's matmuls are thin: (2 x batch x tokens-this-step) rows against a fixed weight. Packing
the weight once into the BLAS library's blocked layout is what ``compile="frozen"`` gets from inductor (per
graph, so one packed copy per graph); this measures the gain per matmul at the sampler's shapes (dim 512:
q|k|v 1536x512, w1|w3 2816x512, w2 512x1408, head 16384x512; ``--dims 1024`` gives ARPG-L's) -- the
evidence behind ``generate(..., pack_weights=True)`` (``arpg.packing``, oneDNN). ``--dtypes bf16`` adds
bf16 weights where the CPU has native bf16 (elsewhere it is emulated and skipped); MKL packing is float32
only. Each timing is the median of 5 interleaved rounds of 50 calls; the error is the largest absolute
difference from ``F.linear`` on fresh inputs, including a row count other than the one the weight was
packed for. Writes ``benchmarks/results/linear_packing.md``.
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

sys.path.insert(0, str(ROOT.parent / "src"))
from arpg.model.config import swiglu_hidden  # noqa: E402
from arpg.util.devices import cpu_has_native  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def shapes(dim: int) -> dict[str, tuple[int, int]]:
    """(out, in) of the decoding matmuls of a model of width ``dim`` (the presets' SwiGLU hidden size)."""
    hidden = swiglu_hidden(dim)
    return {"q|k|v": (3 * dim, dim), "w1|w3": (2 * hidden, dim), "w2": (dim, hidden), "head": (16384, dim)}


def _calls(fn, n: int):
    def run():
        for _ in range(n):
            fn()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="16,64,256,1024", help="comma-separated row counts (2 x batch x tokens)")
    ap.add_argument("--dims", default="512", help="comma-separated model widths (512: the dim-512 model, 1024: ARPG-L)")
    ap.add_argument("--dtypes", default="fp32", help="comma-separated: fp32, bf16 (bf16 only with native support)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "linear_packing.md")
    args = ap.parse_args()
    torch.manual_seed(int(time.time()))
    lines = ["# Pre-packed Linear weights vs F.linear (this CPU)", "",
             f"`python benchmarks/linear_packing.py {' '.join(sys.argv[1:])}`: {machine()}, torch "
             f"{torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Microseconds per "
             "call, median of 5 interleaved rounds of 50 calls; ratio = F.linear time / packed time.", "",
             "| dtype | weight | rows | F.linear us | oneDNN packed us | ratio | MKL packed us | ratio | max err |",
             "|---|---|---|---|---|---|---|---|---|"]
    cases = [(dt, dim, rows) for dt in args.dtypes.split(",") for dim in (int(d) for d in args.dims.split(","))
             for rows in (int(r) for r in args.rows.split(","))]
    for dt_name, dim, rows in cases:
        dtype = DTYPES[dt_name]
        if dtype != torch.float32 and not cpu_has_native(dtype):
            print(f"skipping {dt_name}: not native on this CPU", flush=True)
            continue
        has_mkl = torch.backends.mkl.is_available() and dtype == torch.float32
        for name, (n_out, n_in) in shapes(dim).items():
            x = torch.randn(rows, n_in).to(dtype)
            w = (torch.randn(n_out, n_in) * n_in ** -0.5).to(dtype)
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
            other = torch.randn(rows + 7, n_in).to(dtype)
            err = max((torch.ops.mkldnn._linear_pointwise(z, onednn, None, "none", [], "") - F.linear(z, w))
                      .float().abs().max().item() for z in (torch.randn(rows, n_in).to(dtype), other))
            mkl_cols = (f"{t['mkl']:.0f} | {t['plain'] / t['mkl']:.2f}x" if "mkl" in t else "- | -")
            lines.append(f"| {dt_name} | {name} {n_out}x{n_in} | {rows} | {t['plain']:.0f} | {t['onednn']:.0f} | "
                         f"{t['plain'] / t['onednn']:.2f}x | {mkl_cols} | {err:.1e} |")
            print(lines[-1], flush=True)
    lines += ["", "The oneDNN-packed weight was packed for `rows` rows; the error column includes a call with "
              "rows + 7 (one packed copy serves every step size)."]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
