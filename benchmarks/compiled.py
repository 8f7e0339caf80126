"""Side by side: the published-structure sampler vs arpg eager vs arpg compiled (static-shape graphs).

    python benchmarks/compiled.py                    # the committed matrix (about 40 minutes on 2 CPU cores)
    python benchmarks/compiled.py --cases d512:fp32:8:64 --repeats 3

Each case (model, dtype, batch, steps) runs in its own process, with random weights (head included) and
guidance 4. Samplers, all at equal weights (a bf16 case gives every sampler the same bf16 weight copy):
``reference`` = the published sampler's structure (``sampling/reference.py``: concatenating cache, one
shared order, multinomial draw); ``eager`` = ``arpg.generate`` with the inverse-CDF draw; ``compiled`` =
the same with ``compile=True``; ``frozen`` = ``compile="frozen"`` (weights folded into the graphs);
``packed`` / ``compiled-packed`` = eager / ``compile=True`` with ``pack_weights=True``, the weights moved
into their oneDNN-packed copies (``arpg.speedups.pack_weights(model)``) before each of these
samplers' calls and back after it, untimed, so every other sampler, the reference included, runs plain
``F.linear``; their held MB = what packing in place itself added (measured once, before any sampler ran:
later, the other samplers' graphs keep the plain weights they saw alive) plus what their warm-up call kept. Every
sampler gets one untimed warm-up call (for the compiled ones: building their graphs, timed as compile
time), then ``--repeats`` interleaved rounds; the table gives the median. Peak memory = the rise of the
process's peak resident set (``VmHWM``, reset before each call) during a timed call; held memory = what
the sampler keeps resident after its warm-up call (graphs, their folded weight copies, caches), measured
after ``gc`` and ``malloc_trim``, with the compiler's own modules imported beforehand. ``% of peak`` = the
call's matmul FLOPs per second over a measured large-matmul rate of the same dtype; the FLOPs are those of the
published sampler's work (arpg's guided steps run the head once per conditional/unconditional pair, so its
figure is the rate of equivalent work, not of the FLOPs it executed). The header names the
CPU (model, vector capability, native bf16): ratios differ between CPUs, so keep one file per machine
(``--out``). Writes ``benchmarks/results/compiled.md`` (and ``compiled.json``); ``--merge`` keeps the
cases already there and replaces those run again.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))
sys.path.insert(0, str(ROOT))

import arpg  # noqa: E402
import arpg.speedups  # noqa: E402
from arpg.sampling.steps import compile_report  # noqa: E402
from arpg.sampling.reference import reference_generate  # noqa: E402
from arpg.sampling.resources import cast_weights  # noqa: E402
from arpg.sampling.schedules import step_counts  # noqa: E402
from arpg.util.devices import cpu_has_native  # noqa: E402
from sampling import matmul_peak, sampling_flops  # noqa: E402

MODELS = {
    "d512": ("ARPG-L", dict(dim=512, n_layer=8, n_head=8)),  # dim 512, 4 self + 4 cross layers
    "L": ("ARPG-L", {}),
    "XL-512px": ("ARPG-XL", dict(grid_size=32)),  # the 512x512 shape: 32x32 grid, 1024 tokens
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SAMPLERS = ("reference", "eager", "compiled", "frozen", "packed", "compiled-packed")
PACKED = ("packed", "compiled-packed")  # pack_weights=True, the weights packed in place for their calls
DEFAULT_CASES = ("d512:fp32:8:64", "d512:fp32:1:32", "d512:fp32:32:32", "d512:bf16:8:64", "L:fp32:8:32",
                 "L:bf16:8:32")


def _hwm_reset() -> int:
    """Reset the process's peak RSS to the current RSS (Linux); returns the current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status("VmRSS")


def _trimmed_rss() -> int:
    """The resident set after a garbage collection and glibc's ``malloc_trim`` (freed memory handed back),
    i.e. what live objects hold; bytes."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return _status("VmRSS")


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def run_case(spec: str, samplers: list[str], repeats: int) -> dict:
    name, dtype_name, batch, steps = spec.split(":")
    batch, steps = int(batch), int(steps)
    preset, overrides = MODELS[name]
    dtype = DTYPES[dtype_name]
    import torch._inductor.compile_fx  # noqa: F401  (the compiler's own modules: not charged to a sampler)

    torch.manual_seed(0)
    model = arpg.ARPG.from_preset(preset, **overrides).eval()
    torch.nn.init.normal_(model.head.weight, std=0.02)
    if dtype != torch.float32:
        model = cast_weights(model, dtype)  # one weight copy shared by every sampler
    cfg = model.config
    labels = torch.arange(batch) % cfg.num_classes
    order = torch.randperm(cfg.n_cells, generator=torch.Generator().manual_seed(1))
    kw = dict(steps=steps, cfg_scale=4.0, cfg_schedule="linear", step_schedule="arccos", temperature=1.0)

    def call(which: str):
        gen = torch.Generator().manual_seed(2)
        if which == "reference":
            return reference_generate(model, labels, order, generator=gen, **kw)
        mode = {"eager": False, "compiled": True, "frozen": "frozen", "packed": False, "compiled-packed": True}[which]
        return arpg.generate(model, labels, order=order, attention="block", token_draw="inverse-cdf",
                             generator=gen, compile=mode, pack_weights=which in PACKED, **kw)  # (packed by prepare)

    pack_s: list[float] = []

    def prepare(which: str) -> None:  # untimed: the packed samplers get the weights moved into packed copies
        if which in PACKED:
            t = time.perf_counter()
            arpg.speedups.pack_weights(model)
            pack_s.append(time.perf_counter() - t)

    def finish(which: str) -> None:  # untimed: every other sampler, the reference included, gets them back
        if which in PACKED:
            arpg.speedups.unpack_weights(model)

    out = {"case": spec, "model": name, "dtype": dtype_name, "batch": batch, "steps": steps, "samplers": {},
           "weights_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
           "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": _commit()}
    compile_s, held = {}, {}
    moved = 0  # what packing in place itself costs, measured before any graph exists: graphs the other
    if any(w in PACKED for w in samplers):  # samplers build keep the plain weights they saw alive
        before = _trimmed_rss()
        prepare("packed")
        moved = _trimmed_rss() - before
        finish("packed")
    for which in samplers:  # warm-up; for the compiled samplers this builds (and times) their graphs
        before = _trimmed_rss()
        prepare(which)
        if which in PACKED:
            before = _trimmed_rss() - moved
        t = time.perf_counter()
        call(which)
        first = time.perf_counter() - t
        held[which] = _trimmed_rss() - before  # kept after the call: graphs, their constants, caches, packs
        finish(which)
        if which in ("compiled", "frozen", "compiled-packed"):
            rep = compile_report(model)  # the steps this sampler just used (see run_case_with_slots)
            compile_s[which] = (rep["compile_seconds"], rep["graphs"], first)
    times: dict[str, list[float]] = {w: [] for w in samplers}
    peaks: dict[str, int] = {w: 0 for w in samplers}
    for _ in range(repeats):
        for which in samplers:
            prepare(which)
            base = _hwm_reset()
            t = time.perf_counter()
            call(which)
            times[which].append(time.perf_counter() - t)
            peaks[which] = max(peaks[which], _status("VmHWM") - base)
            finish(which)
    flops = sampling_flops(cfg, 2 * batch, step_counts(cfg.n_cells, steps, "arccos"))
    peak_rate = matmul_peak(dtype, "cpu")
    for which in samplers:
        med = statistics.median(times[which])
        out["samplers"][which] = dict(median_s=med, all_s=times[which], img_s=batch / med,
                                      peak_mb=peaks[which] / 2**20, held_mb=held[which] / 2**20,
                                      pct_peak=100 * flops / med / peak_rate,
                                      compile=compile_s.get(which))
    if pack_s:
        out["packing"] = dict(mode="in place", pack_s=statistics.median(pack_s))
    return out


def _commit() -> str:
    """The checkout's commit (``+`` when the tree has changes), so a merged report says which code each case
    measured."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


def run_case_with_slots(spec: str, samplers: list[str], repeats: int) -> dict:
    """run_case, keeping one set of graphs per compiled sampler (a model is given one), so they interleave."""
    import arpg.sampling.sampler as sampler_mod
    import arpg.sampling.steps as steps_mod

    held: dict = {}
    original = sampler_mod.decode_steps

    def keeper(model, mode=False):
        if not mode:
            return original(model, mode)
        which = "frozen" if mode == "frozen" else "compiled-packed" if arpg.speedups.is_packed(model) else "compiled"
        hit = held.get(which)
        if hit is None or hit.model is not model:
            hit = held[which] = steps_mod.DecodeSteps(model, mode)
        steps_mod._COMPILED[model] = hit  # what compile_report reads
        return hit

    sampler_mod.decode_steps = keeper
    try:
        return run_case(spec, samplers, repeats)
    finally:
        sampler_mod.decode_steps = original


def machine() -> str:
    """The CPU these rows ran on: its model name, torch's vector capability, and whether oneDNN has native
    bf16 (without it, bf16 matmuls are emulated and far slower than fp32)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    return (f"{name}, {os.cpu_count()} CPUs, {torch.backends.cpu.get_cpu_capability()}, native bf16 "
            f"{'yes' if cpu_has_native(torch.bfloat16) else 'no'}")


def command(rows: list[dict], args: argparse.Namespace) -> str:
    """The command line the rows came from (for a rewritten report: the cases it holds)."""
    if args.rewrite:
        cases = ",".join(r["case"] for r in rows)
        return (f"`python benchmarks/compiled.py --cases {cases} --merge --out {args.out.name}` (run in parts; "
                "report rewritten with `--rewrite`)")
    return f"`python benchmarks/compiled.py {' '.join(sys.argv[1:])}`"


def write_report(rows: list[dict], args: argparse.Namespace, path: Path) -> None:
    lines = ["# Compiled sampler (warm, interleaved)", "",
             f"{command(rows, args)}: {machine()}, "
             f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Random weights, "
             f"guidance 4, arccos schedule, block attention; median of {args.repeats} interleaved rounds after one "
             "warm-up call per sampler. `reference` = published structure (concatenating cache, multinomial); "
             "`eager` = arpg.generate (preallocated cache, inverse-CDF draw); `compiled` = compile=True; "
             "`frozen` = compile=\"frozen\"; `packed` / `compiled-packed` = eager / compiled with pack_weights=True: "
             "(in place) = the weights moved into their oneDNN-packed copies before the sampler's calls and back "
             "after them (untimed), so its held MB is what an in-place packed model keeps beyond plain weights; "
             "(copy) = rows measured when the packed copy sat beside the weights (counted in held MB). Compile = time building the graphs (first call of each: trace, "
             "compile, one run), `graphs` = how many. Peak MB = rise of the peak RSS during one timed call. Held MB = "
             "resident memory the sampler keeps after its warm-up call (after gc and malloc_trim): graphs, their "
             "folded constants, caches -- on top of the model's weights (`weights MB`, shared by all samplers); "
             "`-` = not measured (rows from before that column existed). % of matmul peak = the published "
             "sampler's matmul FLOPs for the call per second over a large-matmul rate of the same dtype (arpg's "
             "guided steps run the head once per row pair: for them it is the rate of equivalent work).", "",
             "| model | dtype | batch | steps | weights MB | sampler | img/s | median s | peak MB | held MB | "
             "% of matmul peak | compile s (graphs) | vs reference | vs eager |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["samplers"]
        for which, v in s.items():
            comp = f"{v['compile'][0]:.1f} ({v['compile'][1]})" if v.get("compile") else ""
            vs_ref = f"{s['reference']['median_s'] / v['median_s']:.2f}x" if "reference" in s else ""
            vs_eager = f"{s['eager']['median_s'] / v['median_s']:.2f}x" if "eager" in s else ""
            held = f"{v['held_mb']:.0f}" if "held_mb" in v else "-"
            if which in PACKED:  # rows from before in-place packing held a packed copy beside the weights
                which = f"{which} ({r.get('packing', {}).get('mode', 'copy')})"
            weights = f"{r['weights_mb']:.0f}" if "weights_mb" in r else "-"
            lines.append(f"| {r['model']} | {r['dtype']} | {r['batch']} | {r['steps']} | {weights} | {which} | "
                         f"{v['img_s']:.3f} | {v['median_s']:.3f} | {v['peak_mb']:.0f} | {held} | "
                         f"{v['pct_peak']:.0f}% | {comp} | {vs_ref} | {vs_eager} |")
    when = "; ".join(f"{r['case']} {r.get('measured', 'before 2026-12-03')}"
                     + (f" at {r['commit']}" if r.get("commit") else "") for r in rows)
    lines += ["", f"Each case runs in its own process; measured (case, UTC, commit): {when}."]
    packs = [f"{r['case']} {r['packing']['pack_s']:.2f} s" for r in rows if r.get("packing")]
    if packs:
        lines += ["", "Moving the weights into their packed copies (untimed, before each packed sampler's calls; "
                  "median): " + "; ".join(packs) + "."]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(rows, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES),
                    help="comma-separated MODEL:DTYPE:BATCH:STEPS, MODEL in " + ", ".join(MODELS))
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "compiled.md")
    ap.add_argument("--merge", action="store_true",
                    help="keep the cases already in the results JSON (a case run again replaces its rows)")
    ap.add_argument("--rewrite", action="store_true",
                    help="only rewrite the report from the results JSON (nothing is run)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process: run one case, print JSON
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    samplers = [s for s in args.samplers.split(",") if s]
    bad = [s for s in samplers if s not in SAMPLERS]
    if bad:
        ap.error(f"unknown samplers {bad}; choose from {SAMPLERS}")
    if args.one:
        print("RESULT " + json.dumps(run_case_with_slots(args.one, samplers, args.repeats)), flush=True)
        return
    rows = []
    if (args.merge or args.rewrite) and args.out.with_suffix(".json").exists():
        rows = json.loads(args.out.with_suffix(".json").read_text())
    if args.rewrite:
        write_report(rows, args, args.out)
        return
    for spec in args.cases.split(","):
        cmd = [sys.executable, __file__, "--one", spec, "--samplers", args.samplers, "--repeats", str(args.repeats)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        print(f"[compiled] {spec}", flush=True)
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        found = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode or not found:
            print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"case {spec} failed")
        new = json.loads(found[0][7:])
        rows = [r for r in rows if r["case"] != spec] + [new]
        write_report(rows, args, args.out)  # after every case: nothing lost if a later one fails
        for which, v in rows[-1]["samplers"].items():
            print(f"  {which:9s} {v['median_s']:.3f} s  {v['img_s']:.3f} img/s  {v['peak_mb']:.0f} MB", flush=True)
        print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
