"""``arpg bench``: run the benchmarks (sampling + training throughput) and collect benchmarks/RESULTS.md.

The benchmark scripts live in the repository's ``benchmarks/`` folder (they compare samplers against
baselines in one run); this command runs them with the chosen scope, then writes ``benchmarks/RESULTS.md``
from their result files, plus ``benchmarks/results/quality_vs_steps.png`` (matplotlib, optional) from a
demo quality JSON when one is given.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ..errors import ARPGError

BENCH_DIR = Path(__file__).resolve().parents[3] / "benchmarks"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run the sampling and training benchmarks; write benchmarks/RESULTS.md")
    p.add_argument("--quick", action="store_true", help="small presets only (minutes, not tens of minutes)")
    p.add_argument("--skip-run", action="store_true", help="only rebuild RESULTS.md (and the plot) from results")
    p.add_argument("--quality", default=None, help="demo quality JSON (python -m arpg.demo.quality) to plot")
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not BENCH_DIR.is_dir():
        raise ARPGError(f"benchmarks folder not found at {BENCH_DIR} (arpg bench runs from a source checkout)")
    results = BENCH_DIR / "results"
    if not args.skip_run:
        dev = ["--device", args.device] if args.device else []
        sampling = [sys.executable, str(BENCH_DIR / "sampling.py"), *dev] + (["--quick"] if args.quick else [])
        training = [sys.executable, str(BENCH_DIR / "training.py"), *dev] + (
            ["--presets", "ARPG-tiny", "--steps", "5", "--repeats", "1"] if args.quick else [])
        for cmd in (sampling, training):
            print("[bench] " + " ".join(cmd), flush=True)
            if subprocess.run(cmd).returncode:
                raise ARPGError(f"benchmark failed: {' '.join(cmd)}")
    parts = ["# Benchmark results", "", "Written by `arpg bench`; each section is a results file of one script.", ""]
    for name in ("sampling.md", "sampling_small.md", "cache_ab.md", "cache_ab_bf16.md", "cache_ab_L_bf16.md",
                 "forward.md", "training.md", "training_demo_b64.md"):
        f = results / name
        if f.exists():
            body = f.read_text().strip().splitlines()
            parts += ["#" + body[0] if body and body[0].startswith("#") else f"## {name}", *body[1:], ""]
    if args.quality:
        plot = _plot_quality(Path(args.quality), results / "quality_vs_steps.png")
        if plot:
            parts += [f"![quality and speed against steps](results/{plot.name})", ""]
    (BENCH_DIR / "RESULTS.md").write_text("\n".join(parts))
    print(f"[bench] wrote {BENCH_DIR / 'RESULTS.md'}")
    return 0


def _plot_quality(src: Path, out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[bench] matplotlib not installed (pip install 'arpg[plot]'): no plot")
        return None
    data = json.loads(src.read_text())
    rows = [r for r in data["generation"] if "steps" in r["setting"] and r["setting"].get("attention", "block") == "block"]
    steps = [r["setting"]["steps"] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.2))
    ax[0].plot(steps, [r["img_per_s"] for r in rows], "o-")
    ax[0].set(xlabel="steps", ylabel="img/s", xscale="log", title="speed")
    ax[1].plot(steps, [r["frechet"] for r in rows], "o-", label="ARPG")
    ax[1].axhline(data["frechet_floor_train_vs_heldout"], ls="--", c="gray", label="train vs held-out")
    ax[1].set(xlabel="steps", ylabel="Frechet distance (classifier)", xscale="log", title="quality")
    ax[1].legend()
    ax[2].plot(steps, [r["accuracy"] for r in rows], "o-")
    ax[2].axhline(data["classifier_heldout_accuracy"], ls="--", c="gray")
    ax[2].set(xlabel="steps", ylabel="class accuracy", xscale="log", title="class fidelity")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out
