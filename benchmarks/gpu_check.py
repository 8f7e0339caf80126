"""One-shot GPU check: correctness first, then throughput and peak memory of the published shapes.

    python benchmarks/gpu_check.py                     # on a CUDA machine, <= ~8 minutes on one H200
    python benchmarks/gpu_check.py --device cpu --quick  # the same checks on tiny shapes (validates the script)

Correctness (exit status 1 on any failure):
1. cached decoding == teacher-forced logits, fp32 (TF32 off), causal attention, one token per step;
2. bf16 weights: logits close to fp32 (the share of cells whose top token agrees, and the max difference);
3. ``token_draw="inverse-cdf"`` follows the softmax distribution (chi-square), on the device;
4. ``compile=True`` (the two decode steps compiled with static shapes, ``mode="reduce-overhead"``: PyTorch's CUDA
   graphs) gives the eager tokens from the same
   generator (>= 99.9% equal: a float rounding at a CDF boundary may flip one), fp32;
5. fused q|k|v and w1|w3 projections give the unfused logits (fp32, within 1e-4 of max |logit|).
Throughput (random weights, bf16 weights, guidance 4): the published-structure sampler (concatenating
cache, one shared order, multinomial), ``arpg.generate`` eager (multinomial, inverse-CDF), compiled with
``mode="reduce-overhead"`` (CUDA graphs), and compiled with fused projections, for ARPG-L / XL / XXL at batch 1, 64 and 256 and
32 / 64 steps; img/s, peak memory, compile time (the untimed warm-up call of a compiled variant). Runs stop
when ``--budget-s`` is spent, and say so. Then training: 20 steps of ARPG-L at batch 32, bf16 autocast, the
published training forward and ours, each eager and compiled (samples/s, peak memory). Writes
``benchmarks/results/gpu.md``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))

import arpg  # noqa: E402
import arpg.speedups  # noqa: E402
from arpg.sampling.steps import compile_report  # noqa: E402
from arpg.sampling.guidance import sample_tokens  # noqa: E402
from arpg.sampling.orders import make_orders  # noqa: E402
from arpg.sampling.reference import reference_generate  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_cached_equals_teacher_forced(device, preset: str) -> tuple[bool, str]:
    torch.manual_seed(0)
    model = arpg.ARPG.from_preset(preset).to(device).eval()
    torch.nn.init.normal_(model.head.weight, std=0.02)
    n = model.config.n_cells
    labels = torch.arange(2, device=device) % model.config.num_classes
    orders = make_orders("random", 2, model.config.grid_size, generator=torch.Generator().manual_seed(1)).to(device)
    seen = []
    original = model.pass2  # the network's one Pass-2 decoding step: record what each step's draw reads

    def record(*a, **k):
        logits = original(*a, **k)
        seen.append(logits.float().clone())
        return logits

    model.pass2 = record
    try:  # fp32 asked for: on a GPU the default would run bf16 weights
        codes = arpg.generate(model, labels, steps=n, order=orders, attention="causal", cfg_scale=1.0,
                              dtype=torch.float32, generator=torch.Generator(device=device).manual_seed(2))
    finally:
        del model.pass2
    got = torch.cat(seen, dim=1)
    with torch.no_grad():
        ref = model(codes, labels, orders)
    diff = float((got - ref).abs().max())
    return diff < 1e-3, f"max |cached - teacher forced| = {diff:.2e} (fp32, {preset}, {n} steps)"


def _model_and_batch(device, preset: str):
    """A seeded random model (head included) on ``device`` and a teacher-forcing batch of 4 for it."""
    torch.manual_seed(0)
    model = arpg.ARPG.from_preset(preset).to(device).eval()
    torch.nn.init.normal_(model.head.weight, std=0.02)
    n = model.config.n_cells
    tokens = torch.randint(0, model.config.vocab_size, (4, n), device=device)
    labels = torch.arange(4, device=device) % model.config.num_classes
    orders = torch.stack([torch.randperm(n) for _ in range(4)]).to(device)
    return model, (tokens, labels, orders)


def check_bf16_close(device, preset: str) -> tuple[bool, str]:
    model, (tokens, labels, orders) = _model_and_batch(device, preset)
    with torch.no_grad():
        a = model(tokens, labels, orders)
        b = model.to(torch.bfloat16)(tokens, labels, orders).float()
    agree = float((a.argmax(-1) == b.argmax(-1)).float().mean())
    rel = float((a - b).abs().max() / a.abs().max())
    return agree > 0.9 and rel < 0.1, f"bf16 vs fp32 logits: top token agrees on {agree:.1%} of cells, max diff {rel:.3f} of max |logit|"


def check_inverse_cdf(device) -> tuple[bool, str]:
    from scipy.stats import chi2

    V, N = 64, 400_000
    logits = torch.randn(V, device=device) * 2
    tokens = sample_tokens(logits.expand(N, V), draw="inverse-cdf", generator=torch.Generator(device=device).manual_seed(0))
    counts = torch.bincount(tokens, minlength=V).double().cpu()
    expected = logits.softmax(-1).double().cpu() * N
    keep = expected > 5
    stat = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    bound = float(chi2.ppf(1 - 1e-6, int(keep.sum()) - 1))
    return stat < bound, f"inverse-CDF draw chi-square {stat:.1f} < bound {bound:.1f} ({int(keep.sum())} cells)"


def check_compiled_equals_eager(device, preset: str) -> tuple[bool, str]:
    torch.manual_seed(0)
    model = arpg.ARPG.from_preset(preset).to(device).eval()
    torch.nn.init.normal_(model.head.weight, std=0.02)
    labels = torch.arange(4, device=device) % model.config.num_classes
    kw = dict(steps=16, cfg_scale=3.0, token_draw="inverse-cdf")
    a = arpg.generate(model, labels, generator=torch.Generator(device=device).manual_seed(5), **kw)
    t = time.perf_counter()
    b = arpg.generate(model, labels, generator=torch.Generator(device=device).manual_seed(5), compile=True, **kw)
    first = time.perf_counter() - t
    c = arpg.generate(model, labels, generator=torch.Generator(device=device).manual_seed(5), compile=True, **kw)
    same = float((a == b).float().mean())
    again = bool(torch.equal(b, c))
    rep = compile_report(model)
    return same >= 0.999 and again, (f"compiled == eager tokens on {same:.2%} of cells, replay repeatable: {again} "
                                     f"({preset}, fp32; {rep['graphs']} graphs, first call {first:.1f} s)")


def check_fused_equals_unfused(device, preset: str) -> tuple[bool, str]:
    model, (tokens, labels, orders) = _model_and_batch(device, preset)
    with torch.no_grad():
        a = model(tokens, labels, orders)
        b = arpg.fuse_projections(model)(tokens, labels, orders)
    rel = float((a - b).abs().max() / a.abs().max())
    return rel < 1e-4, f"fused vs unfused logits: max diff {rel:.1e} of max |logit| ({preset}, fp32)"


def throughput(device, presets, batches, steps_list, budget_s: float, lines: list[str]) -> None:
    t_end = time.perf_counter() + budget_s
    lines += ["| shape | batch | steps | sampler | img/s | peak memory (GiB) | speed vs published |",
              "|---|---|---|---|---|---|---|"]
    for preset in presets:
        torch.manual_seed(0)
        with torch.device("meta"):
            model = arpg.ARPG.from_preset(preset)
        model = model.to_empty(device=device)
        model.reset_parameters()
        torch.nn.init.normal_(model.head.weight, std=0.02)
        model = model.to(torch.bfloat16).eval()
        for batch in batches:
            for steps in steps_list:
                if time.perf_counter() > t_end:
                    lines.append(f"| {preset} | {batch} | {steps} | (budget spent: not run) | | | |")
                    continue
                labels = torch.arange(batch, device=device) % model.config.num_classes
                order = torch.randperm(model.config.n_cells)
                variants = {
                    "published structure": lambda: reference_generate(
                        model, labels, order.to(device), steps=steps, cfg_scale=4.0,
                        generator=torch.Generator(device=device).manual_seed(0)),
                    "arpg, default call": lambda: arpg.generate(
                        model, labels, steps=steps, cfg_scale=4.0, order=order,
                        generator=torch.Generator(device=device).manual_seed(0)),
                    "arpg, multinomial": lambda: arpg.generate(
                        model, labels, steps=steps, cfg_scale=4.0, order=order, token_draw="multinomial",
                        generator=torch.Generator(device=device).manual_seed(0)),
                    "arpg, inverse-cdf": lambda: arpg.generate(
                        model, labels, steps=steps, cfg_scale=4.0, order=order, token_draw="inverse-cdf",
                        generator=torch.Generator(device=device).manual_seed(0)),
                    "arpg, compiled (reduce-overhead)": lambda: arpg.generate(
                        model, labels, steps=steps, cfg_scale=4.0, order=order, token_draw="inverse-cdf",
                        generator=torch.Generator(device=device).manual_seed(0), compile=True),
                    "arpg, compiled, fused": lambda: arpg.generate(
                        fused, labels, steps=steps, cfg_scale=4.0, order=order, token_draw="inverse-cdf",
                        generator=torch.Generator(device=device).manual_seed(0), compile=True),
                }
                base = None
                for name, f in variants.items():
                    if time.perf_counter() > t_end:
                        lines.append(f"| {preset} | {batch} | {steps} | {name} (budget spent: not run) | | | |")
                        continue
                    if name.endswith("fused"):
                        fused = arpg.fuse_projections(model)  # in place, exact; unfused again below
                    t = time.perf_counter()
                    f()  # warm-up (for the compiled variants: building and capturing their graphs)
                    _sync(device)
                    warm = time.perf_counter() - t
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    t = time.perf_counter()
                    f()
                    _sync(device)
                    sec = time.perf_counter() - t
                    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
                    base = base or sec
                    built = f" (first call {warm:.1f} s)" if "compiled" in name else ""
                    lines.append(f"| {preset} | {batch} | {steps} | {name}{built} | {batch / sec:.1f} | {mem:.2f} | "
                                 f"{base / sec:.2f}x |")
                    print(lines[-1], flush=True)
                    if name.endswith("fused"):
                        arpg.speedups.unfuse_projections(model)
        model = None  # free the weights before the next shape
        if device.type == "cuda":
            torch.cuda.empty_cache()


def training(device, preset: str, batch: int, steps: int, lines: list[str]) -> None:
    """``steps`` optimizer steps (after one warm-up) of ``preset`` at ``batch``, bf16 autocast (fp32 on a CPU):
    the published training forward and ours (chunked head + loss, lean autograd functions), each eager and
    compiled; samples/s and peak memory."""
    from arpg.train.optim import build_optimizer
    from arpg.train.reference import reference_loss

    amp = torch.bfloat16 if device.type == "cuda" else torch.float32
    lines += ["", f"## Training ({preset}, batch {batch}, {steps} steps after one warm-up, autocast {amp})", "",
              "| step | samples/s | peak memory (GiB) | first step (s) |", "|---|---|---|---|"]
    for name in ("published", "ours", "published, compiled", "ours, compiled"):
        torch.manual_seed(0)
        model = arpg.ARPG.from_preset(preset).to(device).train()
        torch.nn.init.normal_(model.head.weight, std=0.02)
        opt = build_optimizer(model, 4e-4, (0.9, 0.95), 0.05, fused=device.type == "cuda")
        cfg = model.config

        def forward(tokens, labels, orders, drop):
            if name.startswith("published"):
                return reference_loss(model, tokens, labels, orders, drop)
            return model(tokens, labels, orders, drop_labels=drop, return_loss=True)

        run = torch.compile(forward) if name.endswith("compiled") else forward

        def step(k):
            g = torch.Generator(device=device).manual_seed(k)
            tokens = torch.randint(0, cfg.vocab_size, (batch, cfg.n_cells), device=device, generator=g)
            labels = torch.randint(0, cfg.num_classes, (batch,), device=device, generator=g)
            orders = torch.rand(batch, cfg.n_cells, device=device, generator=g).argsort(dim=1)
            drop = torch.rand(batch, device=device, generator=g) < 0.1
            with torch.autocast(device.type, dtype=amp, enabled=amp != torch.float32):
                loss = run(tokens, labels, orders, drop)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        t = time.perf_counter()
        step(0)
        _sync(device)
        first = time.perf_counter() - t
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        for k in range(1, steps + 1):
            step(k)
        _sync(device)
        sec = (time.perf_counter() - t) / steps
        mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        lines.append(f"| {name} | {batch / sec:.1f} | {mem:.2f} | {first:.1f} |")
        print(lines[-1], flush=True)
        model = opt = None
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny shapes (to validate the script on a CPU)")
    p.add_argument("--budget-s", type=float, default=360.0, help="seconds for the throughput part")
    p.add_argument("--skip-training", action="store_true", help="leave out the training rows")
    p.add_argument("--out", default=str(ROOT / "results" / "gpu.md"))
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    check_preset = "ARPG-tiny" if args.quick else "ARPG-L"
    lines = ["# GPU check", "", f"Device: {name}; torch {torch.__version__}.", "", "## Correctness", ""]
    ok_all = True
    for fn in (lambda: check_cached_equals_teacher_forced(device, check_preset),
               lambda: check_bf16_close(device, check_preset), lambda: check_inverse_cdf(device),
               lambda: check_compiled_equals_eager(device, "ARPG-tiny" if args.quick else "ARPG-demo"),
               lambda: check_fused_equals_unfused(device, check_preset)):
        ok, text = fn()
        ok_all &= ok
        lines.append(f"- {'PASS' if ok else 'FAIL'}: {text}")
        print(lines[-1], flush=True)
    lines += ["", "## Throughput (bf16 weights, guidance 4, one warm-up then one timed call)", ""]
    lines += ["First call of a compiled variant = compiling its graphs, capturing the CUDA graphs, one run.", ""]
    presets = ["ARPG-tiny"] if args.quick else ["ARPG-L", "ARPG-XL", "ARPG-XXL"]
    batches = [1, 8] if args.quick else [1, 64, 256]
    steps = [8] if args.quick else [32, 64]
    throughput(device, presets, batches, steps, args.budget_s, lines)
    lines += ["", "Paper anchors (A800, batch 64, bf16, tokens only): ARPG-L 130 / 67.5 img/s at 32 / 64 steps."]
    if not args.skip_training:
        training(device, "ARPG-tiny" if args.quick else "ARPG-L", 4 if args.quick else 32, 2 if args.quick else 20,
                 lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
