"""``arpg sample``: class-conditional generation to PNG files and a grid image."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..demo.assets import load_pair
from ..errors import ARPGError
from ..model import ATTENTION_MODES
from ..sampling.guidance import CFG_SCHEDULES, TOKEN_DRAWS
from ..sampling.orders import ORDERS
from ..sampling.runtime import Runtime
from ..sampling.sample_folder import prepare_sample_folder, write_sample
from ..sampling.sampler import resolve_sampling
from ..sampling.settings import TEMPERATURE_SCHEDULES, SamplingConfig
from ..util.devices import parse_dtype, pick_device
from ._common import (add_device_args, apply_int8, finite_float, float_range, nonneg_int, output_dir, positive_float, positive_int,
                      probability, seed_int)


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """Sampling options shared by ``sample`` and the editing commands (defaults: the model's recommended
    settings, :func:`arpg.sampling.recommended_sampling`)."""
    g = p.add_argument_group("sampling (defaults: the model's recommended settings)")
    g.add_argument("--steps", type=positive_int, default=None, help="decoding steps")
    g.add_argument("--cfg-scale", type=finite_float, default=None, help="guidance scale; 1 disables")
    g.add_argument("--cfg-schedule", default=None, choices=list(CFG_SCHEDULES))
    g.add_argument("--step-schedule", default=None,
                   help="arccos (published), cosine, linear, or comma-separated counts per step (then --steps "
                        "is their number)")
    g.add_argument("--temperature", type=positive_float, default=None)
    g.add_argument("--top-k", type=positive_int, default=None)
    g.add_argument("--top-p", type=probability, default=None)
    g.add_argument("--order", default=None, choices=list(ORDERS))
    g.add_argument("--attention", default=None, choices=list(ATTENTION_MODES))
    g.add_argument("--guidance-interval", type=_interval, default=None, metavar="LO,HI",
                   help="guide only the steps whose share of decoded cells is in (LO, HI] (default 0,1)")
    g.add_argument("--temperature-schedule", default=None, choices=list(TEMPERATURE_SCHEDULES),
                   help="constant, or anneal (linear from --temperature to --temperature-end)")
    g.add_argument("--temperature-end", type=positive_float, default=None)
    g.add_argument("--refine-rounds", type=nonneg_int, default=None,
                   help="re-predict the least confident cells this many times after the last step")
    g.add_argument("--token-draw", default=None, choices=list(TOKEN_DRAWS),
                   help="multinomial (published) or inverse-cdf (same distribution, one uniform per token)")
    g.add_argument("--refine-fraction", type=float_range(0.0, 1.0, lo_open=True, hi_open=True), default=None,
                   help="share of the decoded cells each refinement round re-predicts (default 0.1)")
    g.add_argument("--seed", type=seed_int, default=0)
    add_device_args(p)
    p.add_argument("--int8", action="store_true",
                   help="int8 weight-only sampling on the CPU (faster, at a small measured quality cost; "
                        "see arpg.speedups.int8)")


def _interval(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers LO,HI, got {text!r}") from None
    if not 0 <= lo < hi <= 1:
        raise argparse.ArgumentTypeError(f"need 0 <= LO < HI <= 1, got {text!r}")
    return lo, hi


def sampling_config(args: argparse.Namespace, model) -> SamplingConfig:
    """The settings to use: every option typed on the command line, the model's recommended ones for the
    rest (explicit options always win)."""
    given = {k: getattr(args, k) for k in SamplingConfig.fields() if getattr(args, k, None) is not None}
    return resolve_sampling(model, None, **given).validate(model.config.n_cells)


def parse_labels(text: str | None, num: int, num_classes: int) -> torch.Tensor:
    """``--labels 1,2,3`` or ``--labels all``; repeated/cycled to ``num`` samples."""
    if text in (None, "all"):
        base = list(range(num_classes))
    else:
        try:
            base = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ARPGError(f"--labels: expected comma-separated integers or 'all', got {text!r}") from None
    if not base:
        raise ARPGError("--labels is empty")
    bad = [x for x in base if not 0 <= x < num_classes]
    if bad:
        raise ARPGError(f"labels must be in 0..{num_classes - 1}; got {bad[:5]}")
    n = len(base) if num is None else num
    return torch.tensor([base[i % len(base)] for i in range(n)])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate class-conditional images (PNGs + a grid)")
    p.add_argument("--model", default=None, help="ARPG checkpoint (default: the shipped demo model)")
    p.add_argument("--tokenizer", default=None, help="VQ tokenizer checkpoint (default: the shipped demo tokenizer)")
    p.add_argument("--labels", default=None, help="comma-separated class ids, or 'all' (default: all classes)")
    p.add_argument("--num", type=positive_int, default=None, help="number of images (default: one per label)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per decoding batch (default 32)")
    p.add_argument("--out", type=output_dir, default=Path("samples"),
                   help="output folder: new, empty, or one an earlier arpg sample wrote (its files are replaced)")
    p.add_argument("--save-codes", action="store_true", help="also write codes.npy")
    p.add_argument("--compile", nargs="?", const="on", default=None, choices=["on", "frozen"],
                   help="decode with static-shape steps compiled by torch.compile (same images; the first batch "
                        "pays the compile time, reported apart). 'frozen' folds the weights into the graphs: "
                        "each graph keeps its own packed copy of the weights")
    p.add_argument("--pack-weights", action=argparse.BooleanOptionalAction, default=None,
                   help="CPU: run every decoding matmul through oneDNN-packed weights (the weights are moved into "
                        "them: memory stays one copy). Default: on wherever it can run (see "
                        "arpg.sampling.runtime); --pack-weights insists (refused where it cannot run), "
                        "--no-pack-weights turns it off")
    p.add_argument("--prompts", default=None, metavar="FILE.jsonl",
                   help="text-to-image models: one JSON object per line with a \"prompt\"; writes GenEval's layout "
                        "(OUT/00000/metadata.jsonl, OUT/00000/samples/0000.png, ...; --num images per prompt, "
                        "default 4) for the GenEval scorer")
    p.add_argument("--text-encoder", default=None,
                   help="with --prompts: the prompt encoder (default: the one stored with the model)")
    add_sampling_args(p)
    p.set_defaults(func=run)


def _run_prompts(args: argparse.Namespace) -> int:
    """``--prompts``: GenEval's folder layout for a prompt file."""
    from ..sampling.text_folder import read_prompt_file, text_encoder_for, write_geneval_folder

    rows = read_prompt_file(args.prompts)
    if args.labels is not None:
        raise ARPGError("--prompts and --labels do not combine: a text model takes prompts, a class model labels")
    device = pick_device(args.device)
    model, tok = load_pair(args.model, args.tokenizer, device)
    if not model.config.texted:
        raise ARPGError("--prompts needs a text-to-image model; this one is class-conditional (use --labels)")
    encoder = text_encoder_for(model, args.text_encoder, device)
    n = write_geneval_folder(model, tok, encoder, rows, args.num or 4, sampling_config(args, model), Path(args.out),
                             seed=args.seed, batch_size=args.batch_size, dtype=parse_dtype(args.dtype))
    print(f"arpg sample: {n} images of {len(rows)} prompts -> {args.out} (GenEval layout)")
    return 0


def runtime_request(args: argparse.Namespace) -> Runtime:
    """The runtime options typed on the command line, as one value (checked by :meth:`Runtime.validate`)."""
    return Runtime(dtype=parse_dtype(args.dtype), compile={None: False, "on": True, "frozen": "frozen"}[args.compile],
                   pack_weights=bool(args.pack_weights), int8=bool(args.int8))


def run(args: argparse.Namespace) -> int:
    runtime_request(args).validate(flags=True)  # every combination rule, before anything loads
    if args.prompts is not None:
        return _run_prompts(args)
    out = Path(args.out)
    stale = prepare_sample_folder(out)
    device = pick_device(args.device)
    model, tok = load_pair(args.model, args.tokenizer, device)
    if model.config.texted:
        raise ARPGError("this is a text-to-image model: use arpg t2i \"PROMPT\" or arpg sample --prompts FILE.jsonl")
    model = apply_int8(args, model)
    labels = parse_labels(args.labels, args.num, model.config.num_classes).to(device)
    sampling = sampling_config(args, model)
    meta = write_sample(model, tok, labels, sampling, out, stale=stale, seed=args.seed, dtype_name=args.dtype,
                        batch_size=args.batch_size, save_codes=args.save_codes,
                        record=dict(model=args.model or "shipped demo", tokenizer=args.tokenizer or "shipped demo",
                                    weights="int8 (weight-only)" if args.int8 else "as loaded"),
                        compile={None: False, "on": True, "frozen": "frozen"}[args.compile],
                        pack_weights=args.pack_weights)
    n, t = len(meta["files"]), meta["seconds"]
    built = ""
    if "compile" in meta:
        c = meta["compile"]
        built = f"; {c['compile_seconds']:.1f} s of it building {c['graphs']} graphs, once per process"
    print(f"wrote {n} images and grid.png to {out} ({t:.2f} s sampling, {n / max(t, 1e-9):.1f} img/s{built})")
    return 0
