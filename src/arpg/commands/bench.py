"""``arpg bench``: run the benchmarks (sampling + training throughput) and collect benchmarks/RESULTS.md.

The benchmark scripts live in a source checkout's ``benchmarks/`` folder, not in the installed package
(they compare samplers against baselines in one run); this command runs the ones in ``--dir`` (default
``./benchmarks``) with the chosen scope, then writes ``RESULTS.md`` there from their result files, plus
``results/quality_vs_steps.png`` (matplotlib, optional) from a demo quality JSON when one is given.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ..demo.quality import plot_quality
from ..errors import ARPGError
from ._common import device_name



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run the sampling and training benchmarks; write benchmarks/RESULTS.md")
    p.add_argument("--quick", action="store_true", help="small presets only (minutes, not tens of minutes)")
    p.add_argument("--skip-run", action="store_true", help="only rebuild RESULTS.md (and the plot) from results")
    p.add_argument("--quality", default=None, help="demo quality JSON (python -m arpg.demo.quality) to plot")
    p.add_argument("--device", default=None, type=device_name)
    p.add_argument("--dir", type=Path, default=Path("benchmarks"),
                   help="the benchmarks folder of a source checkout (default: ./benchmarks)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    bench_dir = args.dir
    if not (bench_dir / "sampling.py").is_file():
        raise ARPGError(f"no benchmark scripts in {bench_dir}: run arpg bench from a source checkout, or pass "
                        "--dir CHECKOUT/benchmarks")
    results = bench_dir / "results"
    if not args.skip_run:
        dev = ["--device", args.device] if args.device else []
        sampling = [sys.executable, str(bench_dir / "sampling.py"), *dev] + (["--quick"] if args.quick else [])
        training = [sys.executable, str(bench_dir / "training.py"), *dev] + (
            ["--presets", "ARPG-tiny", "--steps", "5", "--repeats", "1"] if args.quick else [])
        for cmd in (sampling, training):
            print("[bench] " + " ".join(cmd), flush=True)
            if subprocess.run(cmd).returncode:
                raise ARPGError(f"benchmark failed: {' '.join(cmd)}")
    parts = ["# Benchmark results", "", "Written by `arpg bench`; each section is a results file of one script.", ""]
    for name in ("compiled_amx.md", "compiled.md", "compiled_avx2.md", "compiled_512px.md", "linear_packing_amx.md",
                 "linear_packing.md", "token_draw_kernel.md", "token_draw.md",
                 "sampling.md", "sampling_small.md", "cache_ab.md", "cache_ab_bf16.md",
                 "cache_ab_L_bf16.md", "forward.md", "training.md", "training_demo_b64.md", "int8.md"):
        f = results / name
        if f.exists():
            body = f.read_text().strip().splitlines()
            parts += ["#" + body[0] if body and body[0].startswith("#") else f"## {name}", *body[1:], ""]
    plot = plot_quality(Path(args.quality), results / "quality_vs_steps.png") if args.quality else None
    if plot is None and (results / "quality_vs_steps.png").is_file():  # an earlier plot stays listed
        plot = results / "quality_vs_steps.png"
    if plot:
        parts += [f"![quality and speed against steps](results/{plot.name})", ""]
    (bench_dir / "RESULTS.md").write_text("\n".join(parts))
    print(f"[bench] wrote {bench_dir / 'RESULTS.md'}")
    return 0
