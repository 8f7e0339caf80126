"""The embedded demo: class-conditional generation and zero-shot editing with the shipped weights.

Writes into ``out``: ``samples.png`` (10 classes x 8 samples), ``inpaint.png``, ``outpaint.png``,
``edit.png``, ``expand.png`` (before / mask / after strips on held-out images), ``control.png`` (ControlARPG:
each held-out image, its Canny map and the result, then its layout map and the result, with the shipped
control weights), ``t2i.png`` (the shipped text-to-image demo: a row of images per example prompt) and
``index.html``, a one-page report with every picture and its timing.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model.weights import load_model
from ..data.animal_mnist import CLASS_NAMES, load_split, padded
from ..data.conditions import CONDITION_KINDS
from ..editing.control import control_image
from ..editing.expand import expand_image
from ..editing.images import edit_image, inpaint_image, outpaint_image
from ..editing.save import known_view
from ..sampling import generate, recommended_sampling
from ..util.images import make_grid, make_strip, to_pil, to_uint8
from ..vq import load_tokenizer
from .assets import T2I_PATHS, control_model_path, demo_card, demo_paths, has_control_weights, load_t2i
from .scenes import HELDOUT_PAIRS, t2i_examples

SCALE = 3  # enlarge the 32x32 pictures in the report


def run_demo(*args, **kwargs) -> dict[str, Any]:
    """Run the demo and return the timings; see the module docstring for what is written."""
    with torch.no_grad():  # a context, not a global switch: callers may train afterwards
        return _run_demo(*args, **kwargs)


def _run_demo(out: str | Path, *, samples_per_class: int = 8, steps: int | None = None, seed: int = 0,
             n_edit: int = 4, model_path: str | None = None, tokenizer_path: str | None = None,
             log=print) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    paths = demo_paths(check=model_path is None or tokenizer_path is None)
    model = load_model(model_path or paths.model)
    tok = load_tokenizer(tokenizer_path or paths.tokenizer)
    card = demo_card()
    sampling = recommended_sampling(model).replace(steps=steps).validate(model.config.n_cells)
    recipe = {"sampling": sampling}
    f = tok.downsample
    g = model.config.grid_size
    gen = torch.Generator().manual_seed(seed)
    timings: dict[str, float] = {}
    sections = []

    # (a) class-conditional samples
    labels = torch.arange(len(CLASS_NAMES)).repeat_interleave(samples_per_class)
    t = time.perf_counter()
    codes = generate(model, labels, generator=gen, **recipe)
    images = to_uint8(tok.decode(codes, grid=(g, g)))
    timings["generate"] = time.perf_counter() - t
    grid = make_grid(images, ncol=samples_per_class)
    to_pil(grid, SCALE).save(out / "samples.png")
    sections.append(("Class-conditional samples", "samples.png",
                     f"{len(labels)} images, one row per class ({', '.join(CLASS_NAMES)}), {sampling.steps} steps, "
                     f"guidance {sampling.cfg_scale} ({sampling.cfg_schedule}), temperature {sampling.temperature}: "
                     f"{timings['generate']:.2f} s "
                     f"({len(labels) / timings['generate']:.1f} img/s, decoding included)"))
    log(f"[demo] generated {len(labels)} samples in {timings['generate']:.2f} s")

    # (b) editing on held-out images
    held, held_labels = load_split("heldout")
    pick = np.linspace(0, len(held) - 1, n_edit).astype(int)
    src = padded(held[pick])
    size = src.shape[1]
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("inpaint", "edit", "outpaint", "expand")}
    for k in rows:
        timings[k] = 0.0
    for i, (img, lab) in enumerate(zip(src, held_labels[pick])):
        lab = int(lab)
        box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
        t = time.perf_counter()
        r = inpaint_image(model, tok, img, box=box, label=lab, generator=gen, **recipe)
        timings["inpaint"] += time.perf_counter() - t
        rows["inpaint"].append(make_strip([img, known_view(img, r["known"], f), r["images"][0]]))

        new = (lab + 5) % len(CLASS_NAMES)
        t = time.perf_counter()
        r = edit_image(model, tok, img, box=(0, 0, size, size // 2 + f), new_label=new, generator=gen, **recipe)
        timings["edit"] += time.perf_counter() - t
        rows["edit"].append(make_strip([img, known_view(img, r["known"], f), r["images"][0]]))

        t = time.perf_counter()
        r = outpaint_image(model, tok, img, canvas=(size, 2 * size), offset=(0, size // 2), label=lab,
                           generator=gen, **recipe)
        timings["outpaint"] += time.perf_counter() - t
        rows["outpaint"].append(make_strip([img, r["images"][0]]))

        t = time.perf_counter()
        r = expand_image(model, tok, img, label=lab, generator=gen, **recipe)
        timings["expand"] += time.perf_counter() - t
        rows["expand"].append(make_strip([r["upsampled"], r["images"][0]]))
    # (c) ControlARPG: the same held-out images' maps, with the shipped fine-tunes
    kinds = [k for k in CONDITION_KINDS if has_control_weights(k)] if model_path is None else []
    if kinds:
        controls = {k: load_model(control_model_path(k)) for k in kinds}
        timings["control"] = 0.0
        rows["control"] = []
        for img, lab in zip(src, held_labels[pick]):
            parts = [img]
            for k, ctl in controls.items():
                t = time.perf_counter()
                r = control_image(ctl, tok, int(lab), image=img, generator=gen, **recipe)
                timings["control"] += (time.perf_counter() - t) / len(kinds)
                parts += [r["condition_view"], r["images"][0]]
            rows["control"].append(make_strip(parts))
    texts = {
        "inpaint": "Inpainting the centre: source, known cells (grey = regenerated), result — same class.",
        "edit": "Class edit: the top half regenerated under class (label + 5) mod 10.",
        "outpaint": f"Outpainting to a {size}x{2 * size} canvas ({2 * g} cells wide) with sliding {g}x{g} windows.",
        "expand": "Resolution expansion 2x (method 'dense'): bicubic upsample, a checkerboard of its codes kept, the "
                  "rest decoded in one context at interpolated positions.",
        "control": "ControlARPG (" + " and ".join(f"demo-control-{k}" for k in kinds) + "): the source, then for each "
                   "condition kind its map of the source and an image of the same class generated under it.",
    }
    for k, strips in rows.items():
        w = max(s.shape[1] for s in strips)
        stacked = np.concatenate([np.pad(s, ((0, 4), (0, w - s.shape[1]), (0, 0)), constant_values=255) for s in strips])
        to_pil(stacked, SCALE).save(out / f"{k}.png")
        sections.append((k.capitalize(), f"{k}.png", f"{texts[k]} {timings[k] / len(src):.2f} s per edit."))
        log(f"[demo] {k}: {timings[k] / len(src):.2f} s per edit")
    # (d) text to image, with the shipped text-to-image demo
    if model_path is None and T2I_PATHS.exist():
        t = time.perf_counter()
        sheet, n, t2i_steps = text_to_image_sheet(t2i_examples(), samples_per_class, steps=steps, seed=seed)
        timings["t2i"] = time.perf_counter() - t
        to_pil(sheet, 2).save(out / "t2i.png")
        sections.append(("Text to image", "t2i.png",
                         f"The shipped text-to-image demo: one row per prompt ({t2i_steps} steps), {n} images in "
                         f"{timings['t2i']:.2f} s. Held-out (colour, animal) pairs, which no training scene "
                         f"showed: {', '.join(f'{c} {a}' for c, a in HELDOUT_PAIRS)}."))
        log(f"[demo] text to image: {n} images in {timings['t2i']:.2f} s")
    timings["total"] = time.perf_counter() - t_all
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    _write_html(out, sections, timings, card)
    log(f"[demo] wrote {out / 'index.html'} (total {timings['total']:.1f} s)")
    return timings


def text_to_image_sheet(prompts: list[str], per_prompt: int, *, steps: int | None = None, seed: int = 0,
                        model_path: str | None = None, tokenizer_path: str | None = None
                        ) -> tuple[np.ndarray, int, int]:
    """A picture of ``per_prompt`` images of each prompt, one row each with the prompt written to its left
    (the shipped text-to-image demo unless paths are given); returns (uint8 image, images made, steps)."""
    from PIL import Image, ImageDraw

    from ..sampling.text_folder import text_encoder_for

    model, tok = load_t2i("cpu", model_path, tokenizer_path)
    encoder = text_encoder_for(model, None, "cpu")
    sampling = recommended_sampling(model).replace(steps=steps).validate(model.config.n_cells)
    g = model.config.grid_size
    with torch.no_grad():
        codes = generate(model, prompts=[p for p in prompts for _ in range(per_prompt)], text_encoder=encoder,
                         sampling=sampling, generator=torch.Generator().manual_seed(seed))
        images = to_uint8(tok.decode(codes, grid=(g, g)))
    grid = make_grid(images, ncol=per_prompt)
    side = images.shape[1]
    label_w = 6 * max(len(p) for p in prompts) + 8  # PIL's default bitmap font is about 6 px a character
    canvas = Image.new("RGB", (label_w + grid.shape[1], grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (label_w, 0))
    draw = ImageDraw.Draw(canvas)
    for i, p in enumerate(prompts):  # make_grid's rows start at 2 + i * (side + 2)
        draw.text((4, 2 + i * (side + 2) + side // 2 - 5), p, fill="black")
    return np.asarray(canvas), len(images), sampling.steps


def _write_html(out: Path, sections, timings, card) -> None:
    parts = ["<!doctype html><meta charset='utf-8'><title>ARPG demo</title>",
             "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}img{image-rendering:pixelated;"
             "max-width:100%}figure{margin:1.5em 0}</style>",
             "<h1>ARPG demo — randomized parallel decoding on Animal-MNIST</h1>",
             f"<p>Total wall time {timings['total']:.1f} s on this machine. Model card: "
             f"{html.escape(json.dumps(card.get('summary', {})))}</p>"]
    for title, img, text in sections:
        parts.append(f"<figure><h2>{html.escape(title)}</h2><img src='{img}'><figcaption>{html.escape(text)}"
                     "</figcaption></figure>")
    (out / "index.html").write_text("\n".join(parts))
