"""What `arpg.generate` with no speed options gets, against the published sampler's structure and each explicit
variant: images per second and peak memory, side by side.

Per model shape (random weights; the head given small random values so the draws are not uniform), batch and
dtype, one process builds the model once and times, interleaved ``--repeats`` times, with guidance 4 and the
arccos schedule:

* ``published``: :func:`arpg.sampling.reference.reference_generate` (cache grown by concatenation, one order for
  the batch, ``torch.multinomial``), the yardstick;
* ``default``: ``arpg.generate(model, labels, steps=S, cfg_scale=4)``, what ``arpg sample`` runs;
* ``plain+multinomial``: ``pack_weights=False, token_draw="multinomial"``, the published draw;
* ``plain``: ``pack_weights=False`` (inverse-CDF draw);
* ``packed``: ``pack_weights=True`` (the caller's model packed in place for each call, as the default does
  where it packs);
* ``hand-packed``: the model packed once beforehand with ``arpg.speedups.pack_weights`` (no packing per call);
* ``compiled`` / ``compiled-plain``: ``compile=True`` with the default packing / with ``pack_weights=False``
  (their compile time is paid in a warm-up call and not counted).

The ratio column is the published call's median time over the variant's; peak memory is the growth of the
process's peak resident memory over one call of that variant, each in a fresh process.

Usage::

    python benchmarks/default_path.py                       # the demo shape, dim-512 / 8 layers and ARPG-L, batch 1 and 8
    python benchmarks/default_path.py --shapes dim512 --batches 8 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))

import arpg  # noqa: E402
import arpg.speedups  # noqa: E402
from _timing import cpu_name, interleaved_times  # noqa: E402
from arpg.sampling.reference import reference_generate  # noqa: E402

SHAPES = {"demo": ("ARPG-demo", {}), "dim512": ("ARPG-S", dict(n_layer=8)), "ARPG-L": ("ARPG-L", {})}
VARIANTS = {
    "published": None,
    "default": {},
    "plain+multinomial": dict(pack_weights=False, token_draw="multinomial"),
    "plain": dict(pack_weights=False),
    "packed": dict(pack_weights=True),
    "hand-packed": {},
    "compiled": dict(compile=True),
    "compiled-plain": dict(compile=True, pack_weights=False),
}
COMPILED = ("compiled", "compiled-plain")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def build(shape: str, dtype: str) -> arpg.ARPG:
    preset, over = SHAPES[shape]
    torch.manual_seed(0)
    model = arpg.ARPG.from_preset(preset, **over).eval()
    torch.nn.init.normal_(model.head.weight, std=0.02)
    return model if dtype == "fp32" else model.to(DTYPES[dtype])


def call(model, variant: str, labels: torch.Tensor, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    if VARIANTS[variant] is None:
        order = torch.randperm(model.config.n_cells, generator=gen)
        reference_generate(model, labels, order, steps=steps, cfg_scale=4.0, generator=gen)
    else:
        arpg.generate(model, labels, steps=steps, cfg_scale=4.0, generator=gen, **VARIANTS[variant])


def time_variants(a: argparse.Namespace, shape: str, batch: int, dtype: str, variants: list[str]) -> dict:
    torch.set_num_threads(a.threads)
    model = build(shape, dtype)
    labels = torch.randint(0, model.config.num_classes, (batch,), generator=torch.Generator().manual_seed(1))
    models = {v: model for v in variants}
    if "hand-packed" in variants:  # its own copy, packed once (in place: one copy of its weights)
        models["hand-packed"] = arpg.speedups.pack_weights(build(shape, dtype))
    for v in variants:  # warm-up: first-call allocations, kernel choices, and the compile of ``compiled``
        call(models[v], v, labels, a.steps, 0)
    return interleaved_times({v: (lambda v=v: call(models[v], v, labels, a.steps, 1)) for v in variants}, a.repeats)


def peak_of(a: argparse.Namespace, shape: str, batch: int, dtype: str, variant: str) -> float:
    torch.set_num_threads(a.threads)
    model = build(shape, dtype)
    if variant == "hand-packed":
        arpg.speedups.pack_weights(model)
    labels = torch.randint(0, model.config.num_classes, (batch,), generator=torch.Generator().manual_seed(1))
    if variant in COMPILED:
        call(model, variant, labels, a.steps, 0)  # its graphs are built once per process
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    call(model, variant, labels, a.steps, 1)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--dtypes", nargs="+", default=None, help="default: fp32, plus bf16 where the CPU has it natively")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the fresh-process memory runs")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "default_path.md")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: "times|peak,shape,batch,dtype[,variant]"
    a = p.parse_args()
    if a.case:
        kind, shape, batch, dtype, *rest = a.case.split(",")
        if kind == "times":
            print(json.dumps(time_variants(a, shape, int(batch), dtype, a.variants)))
        else:
            print(json.dumps(peak_of(a, shape, int(batch), dtype, rest[0])))
        return 0

    from arpg.util.devices import cpu_has_native

    dtypes = a.dtypes or (["fp32", "bf16"] if cpu_has_native(torch.bfloat16) else ["fp32"])
    base = [sys.executable, __file__, "--steps", str(a.steps), "--repeats", str(a.repeats), "--threads",
            str(a.threads), "--variants", *a.variants]
    rows = ["| shape | batch | dtype | call | img/s | vs published | peak MB |", "|---|---|---|---|---|---|---|"]
    for shape in a.shapes:
        for batch in a.batches:
            for dtype in dtypes:
                out = subprocess.run([*base, "--case", f"times,{shape},{batch},{dtype}"], capture_output=True,
                                     text=True, check=True).stdout
                times = json.loads(out.strip().splitlines()[-1])
                pub = statistics.median(times["published"]) if "published" in times else None
                for v in a.variants:
                    med = statistics.median(times[v])
                    mem = "-"
                    if a.memory:
                        got = subprocess.run([*base, "--case", f"peak,{shape},{batch},{dtype},{v}"],
                                             capture_output=True, text=True, check=True).stdout
                        mem = f"{json.loads(got.strip().splitlines()[-1]):.0f}"
                    ratio = f"{pub / med:.2f}x" if pub else "-"
                    rows.append(f"| {shape} | {batch} | {dtype} | {v} | {batch / med:.2f} | {ratio} | {mem} |")
                    print(rows[-1], flush=True)
    head = (f"`arpg.generate` defaults vs the published sampler's structure and explicit variants: {a.steps} steps, "
            f"guidance 4 (arccos, linear), random weights, {a.threads} threads, {cpu_name()}, torch "
            f"{torch.__version__}; median of {a.repeats} interleaved calls after a warm-up; peak MB = growth of "
            "peak resident memory over one call in a fresh process.\n")
    text = head + "\n" + "\n".join(rows) + "\n"
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
