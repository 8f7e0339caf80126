"""What the browser app runs, without the browser: one function per tab, validated inputs, one-line errors.

Every function takes plain values (numpy images, numbers, names) and returns numpy images plus a short
report, so the tests call them directly and the gradio layer (:mod:`arpg.app.ui`) only wires widgets.
Images go through :func:`arpg.editing.images.read_image` (the conversion the CLI uses), fitted to the model's
native size unless ``fit=False``; sampling settings start from the model's recommended ones
(:func:`arpg.sampling.resolve_sampling`), as in the CLI and the API.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..data.conditions import CONDITION_KINDS
from ..demo.assets import control_model_path, has_control_weights, load_pair
from ..editing.control import condition_from_file, control_image
from ..editing import expand_image, inpaint_image, outpaint_image
from ..editing.canvas import MAX_CANVAS_FACTOR
from ..editing.images import read_image
from ..editing.save import known_view
from ..errors import ARPGError
from ..sampling import generate, resolve_sampling
from ..sampling.settings import SamplingConfig
from ..util.images import make_grid, make_strip, to_pil, to_uint8
from ..model.weights import load_model
from .classes import class_names, demo_examples

#: Largest uploaded image side in pixels (before it is fitted to the model's size).
MAX_UPLOAD_SIDE = 4096
#: Most images one Generate job makes.
MAX_IMAGES = 64
#: Where outpainting may place the source on the canvas.
ANCHORS = ("centre", "top-left", "top", "top-right", "left", "right", "bottom-left", "bottom", "bottom-right")

Progress = Callable[[int, int], None]


@dataclass
class AppBackend:
    """A loaded model / tokenizer pair and what the tabs need to know about it."""

    model: Any
    tokenizer: Any
    class_names: list[str]
    examples: list[tuple[str, np.ndarray, int]] = field(default_factory=list)  # (caption, image, label)
    controls: dict[str, Any] = field(default_factory=dict)  # condition kind -> ControlARPG model (Control tab)
    text_to_image: "TextToImage | None" = None  # the Text to image tab's model, tokenizer and prompt encoder
    out_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="arpg-app-")))

    @property
    def image_size(self) -> tuple[int, int]:
        g, f = self.model.config.grid_size, self.tokenizer.downsample
        return g * f, g * f

    @property
    def device(self) -> torch.device:
        return self.model.embeddings.weight.device

    def recommended(self) -> SamplingConfig:
        return resolve_sampling(self.model)

    def label_choices(self) -> list[str]:
        """Dropdown entries ``"ID: name"`` (the id keeps duplicate ImageNet names apart)."""
        return [f"{i}: {n}" for i, n in enumerate(self.class_names)]

    # -- inputs ---------------------------------------------------------------------------------------

    def parse_label(self, choice: Any) -> int:
        """A dropdown entry ``"ID: name"``, a bare id or a class name -> the class id (checked)."""
        if choice is None or (isinstance(choice, str) and not choice.strip()):
            raise ARPGError("choose a class")
        n = len(self.class_names)
        if isinstance(choice, (int, np.integer)) and not isinstance(choice, bool):
            label = int(choice)
        else:
            text = str(choice).strip()
            head = text.split(":", 1)[0].strip()
            if head.lstrip("-").isdigit():
                label = int(head)
            elif text in self.class_names:
                label = self.class_names.index(text)
            else:
                raise ARPGError(f"unknown class {text!r}: choose one of the listed classes")
        if not 0 <= label < n:
            raise ARPGError(f"class id must be in 0..{n - 1}, got {label}")
        return label

    def sampling(self, steps: Any = None, cfg_scale: Any = None, cfg_schedule: Any = None, temperature: Any = None,
                 order: Any = None, attention: Any = None) -> SamplingConfig:
        """The settings of a job: the model's recommended ones with the given values replaced (checked)."""
        given = dict(steps=steps, cfg_scale=cfg_scale, cfg_schedule=cfg_schedule, temperature=temperature,
                     order=order, attention=attention)
        if steps is not None:
            if float(steps) != int(steps):
                raise ARPGError(f"steps must be a whole number, got {steps}")
            given["steps"] = int(steps)
        for k in ("cfg_scale", "temperature"):
            if given[k] is not None:
                given[k] = float(given[k])
        sc = resolve_sampling(self.model, **{k: v for k, v in given.items() if v is not None})
        sc.validate(self.model.config.n_cells)
        return sc

    def source(self, image: Any, fit: bool = True) -> np.ndarray:
        """An uploaded / example image as the tokenizer sees it: its channels, fitted to the model's size."""
        if image is None:
            raise ARPGError("no image: upload one or pick an example")
        if isinstance(image, dict):  # the image editor's value
            image = image.get("background")
            if image is None:
                raise ARPGError("no image: upload one or pick an example")
        arr = np.asarray(image)
        if arr.ndim < 2 or arr.shape[0] > MAX_UPLOAD_SIDE or arr.shape[1] > MAX_UPLOAD_SIDE:
            raise ARPGError(f"image of {'x'.join(map(str, arr.shape[:2]))} pixels is too large: the limit is "
                            f"{MAX_UPLOAD_SIDE} pixels a side")
        img = read_image(arr, self.tokenizer.config.in_channels, fit=self.image_size if fit else None)
        if img.shape[:2] != self.image_size:  # bounded jobs: the app edits images of the model's own size
            H, W = self.image_size
            raise ARPGError(f"the image is {img.shape[0]}x{img.shape[1]} pixels; this model edits {H}x{W} images: "
                            f"tick 'fit' or upload a {H}x{W} image")
        return img

    def mask(self, editor_value: Any, height: int, width: int) -> np.ndarray:
        """The painted region of the image editor (any painted pixel of any layer), at ``height x width``."""
        layers = (editor_value or {}).get("layers") or [] if isinstance(editor_value, dict) else []
        painted = None
        for layer in layers:
            a = np.asarray(layer)
            if a.ndim == 3 and a.shape[-1] == 4:
                hit = a[..., 3] > 0
            elif a.ndim == 3:
                hit = a.max(axis=-1) > 0
            else:
                hit = a > 0
            painted = hit if painted is None or painted.shape != hit.shape else painted | hit
        if painted is None or not painted.any():
            raise ARPGError("no mask painted: paint the region to regenerate with the brush")
        if painted.shape != (height, width):  # area-resize: a cell partly painted counts as painted
            small = Image.fromarray(painted.astype(np.uint8) * 255).resize((width, height), Image.Resampling.BOX)
            painted = np.asarray(small) > 0
        return painted

    # -- jobs -----------------------------------------------------------------------------------------

    def _kw(self, sc: SamplingConfig, seed: Any, on_step: Progress | None) -> dict[str, Any]:
        if seed is None or float(seed) != int(seed) or int(seed) < 0:
            raise ARPGError(f"seed must be a non-negative whole number, got {seed}")
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        return dict(sampling=sc, generator=gen, on_step=on_step)

    def _save(self, name: str, images: Sequence[np.ndarray], record: dict[str, Any]) -> list[str]:
        """Native-resolution PNGs of a job (for download) and its record; returns the PNG paths."""
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{time.perf_counter_ns() % 10**6:06d}"
        folder = self.out_dir / f"{name}-{stamp}"
        folder.mkdir(parents=True)
        paths = []
        for i, img in enumerate(images):
            p = folder / f"{name}_{i}.png"
            to_pil(img).save(p)
            paths.append(str(p))
        (folder / "record.json").write_text(json.dumps(record, indent=2, default=str))
        return paths

    def run_generate(self, labels: Sequence[Any], per_class: Any, sc: SamplingConfig, seed: Any,
                     on_step: Progress | None = None) -> dict[str, Any]:
        ids = [self.parse_label(c) for c in (labels or [])]
        if not ids:
            raise ARPGError("choose at least one class")
        if per_class is None or float(per_class) != int(per_class) or int(per_class) < 1:
            raise ARPGError(f"images per class must be a positive whole number, got {per_class}")
        total = len(ids) * int(per_class)
        if total > MAX_IMAGES:
            raise ARPGError(f"{total} images asked for; one job makes at most {MAX_IMAGES}")
        y = torch.tensor(ids, dtype=torch.long).repeat_interleave(int(per_class))
        t0 = time.perf_counter()
        codes = generate(self.model, y, **self._kw(sc, seed, on_step))
        g = self.model.config.grid_size
        with torch.no_grad():
            images = to_uint8(self.tokenizer.decode(codes, grid=(g, g)))
        seconds = time.perf_counter() - t0
        grid = make_grid(images, ncol=int(per_class))
        files = self._save("sample", [grid, *images], dict(labels=y.tolist(), seed=seed, sampling=sc.to_dict()))
        return dict(grid=grid, images=images, files=files, seconds=seconds,
                    report=f"{total} images in {seconds:.2f} s ({sc.steps} steps, guidance {sc.cfg_scale:g})")

    def run_inpaint(self, editor_value: Any, label: Any, sc: SamplingConfig, seed: Any, fit: bool = True,
                    on_step: Progress | None = None) -> dict[str, Any]:
        img = self.source(editor_value, fit)
        lab = self.parse_label(label)
        mask = self.mask(editor_value, *img.shape[:2])
        t0 = time.perf_counter()
        res = inpaint_image(self.model, self.tokenizer, img, mask, lab, **self._kw(sc, seed, on_step))
        seconds = time.perf_counter() - t0
        seen = known_view(img, res["known"], self.tokenizer.downsample)
        out = res["images"][0]
        files = self._save("inpaint", [out, seen, img], dict(label=lab, seed=seed, sampling=sc.to_dict()))
        n_new = int((~res["known"]).sum())
        return dict(result=out, known=seen, strip=make_strip([img, seen, out]), files=files, seconds=seconds,
                    report=f"{n_new} of {res['known'].numel()} cells regenerated under "
                           f"{self.class_names[lab]!r} in {seconds:.2f} s")

    def run_outpaint(self, image: Any, height: Any, width: Any, anchor: str, label: Any, sc: SamplingConfig,
                     seed: Any, fit: bool = True, on_step: Progress | None = None) -> dict[str, Any]:
        img = self.source(image, fit)
        lab = self.parse_label(label)
        H, W = img.shape[:2]
        f = self.tokenizer.downsample
        try:
            CH, CW = int(height), int(width)
        except (TypeError, ValueError):
            raise ARPGError("canvas height and width must be whole numbers of pixels") from None
        if anchor not in ANCHORS:
            raise ARPGError(f"position must be one of {', '.join(ANCHORS)}, got {anchor!r}")
        if CH < H or CW < W:
            raise ARPGError(f"canvas {CH}x{CW} is smaller than the source image {H}x{W} (height x width)")
        vert = 0 if anchor.startswith("top") else (CH - H if anchor.startswith("bottom") else (CH - H) // 2)
        horiz = 0 if anchor.endswith("left") else (CW - W if anchor.endswith("right") else (CW - W) // 2)
        offset = (vert // f * f, horiz // f * f)
        t0 = time.perf_counter()
        res = outpaint_image(self.model, self.tokenizer, img, (CH, CW), offset, lab, progress=True,
                             **self._kw(sc, seed, on_step))
        seconds = time.perf_counter() - t0
        out = res["images"][0]
        files = self._save("outpaint", [out], dict(label=lab, canvas=[CH, CW], offset=offset, seed=seed,
                                                    sampling=sc.to_dict()))
        return dict(result=out, files=files, seconds=seconds,
                    report=f"{CH}x{CW} canvas, {len(res['windows'])} windows in {seconds:.2f} s")

    def run_expand(self, image: Any, factor: Any, label: Any, sc: SamplingConfig, seed: Any, fit: bool = True,
                   on_step: Progress | None = None) -> dict[str, Any]:
        img = self.source(image, fit)
        lab = self.parse_label(label)
        if factor is None or float(factor) != int(factor) or int(factor) < 2:
            raise ARPGError(f"factor must be a whole number >= 2, got {factor}")
        t0 = time.perf_counter()
        res = expand_image(self.model, self.tokenizer, img, lab, factor=int(factor), progress=True,
                           **self._kw(sc, seed, on_step))
        seconds = time.perf_counter() - t0
        out = res["images"][0]
        files = self._save("expand", [out], dict(label=lab, factor=int(factor), seed=seed, sampling=sc.to_dict()))
        return dict(result=out, files=files, seconds=seconds,
                    report=f"{img.shape[0]}x{img.shape[1]} -> {out.shape[0]}x{out.shape[1]} in {seconds:.2f} s")

    def run_control(self, image: Any, condition: Any, kind: str, label: Any, guidance: str, sc: SamplingConfig,
                    seed: Any, fit: bool = True, on_step: Progress | None = None) -> dict[str, Any]:
        """Generate under a condition: ``kind``'s map of ``image``, or the uploaded ``condition`` map."""
        if not self.controls:
            raise ARPGError("no ControlARPG weights are loaded: start the app with --control-model PATH")
        if kind not in self.controls:
            raise ARPGError(f"no ControlARPG weights for {kind!r} maps; loaded: {', '.join(self.controls)}")
        model = self.controls[kind]
        lab = self.parse_label(label)
        img = None if image is None else self.source(image, fit)
        cond = None
        if condition is not None:
            cond = condition_from_file(model, np.asarray(condition, dtype=np.uint8))
        elif img is None:
            raise ARPGError("upload or pick an image to take the condition from (or upload a condition map)")
        t0 = time.perf_counter()
        res = control_image(model, self.tokenizer, lab, image=None if cond is not None else img, condition=cond,
                            condition_guidance=guidance, **self._kw(sc, seed, on_step))
        seconds = time.perf_counter() - t0
        out, view = res["images"][0], res["condition_view"]
        files = self._save("control", [out, view], dict(label=lab, kind=kind, condition_guidance=guidance,
                                                        condition="uploaded map" if cond is not None else "of the image",
                                                        seed=seed, sampling=sc.to_dict()))
        return dict(result=out, condition=view, files=files, seconds=seconds,
                    report=f"{self.class_names[lab]!r} under the {kind} map "
                           f"{'uploaded' if cond is not None else 'of the image'} in {seconds:.2f} s")

    def run_t2i(self, prompt: Any, num: Any, sc: SamplingConfig | None, seed: Any,
                on_step: Progress | None = None) -> dict[str, Any]:
        """``num`` images of ``prompt`` with the text-to-image model (``sc``: its settings; None = recommended)."""
        t2i = self.text_to_image
        if t2i is None:
            raise ARPGError("no text-to-image model is loaded: start the app with --t2i-model and --t2i-tokenizer")
        if prompt is None or not str(prompt).strip():
            raise ARPGError("the prompt is empty: describe the image to generate, e.g. 'a red cat above a blue dog'")
        if num is None or float(num) != int(num) or not 1 <= int(num) <= MAX_IMAGES:
            raise ARPGError(f"images must be a whole number from 1 to {MAX_IMAGES}, got {num}")
        sc = sc or t2i.recommended()
        prompts = [str(prompt).strip()] * int(num)
        t0 = time.perf_counter()
        codes = generate(t2i.model, prompts=prompts, text_encoder=t2i.encoder, **self._kw(sc, seed, on_step))
        g = t2i.model.config.grid_size
        with torch.no_grad():
            images = to_uint8(t2i.tokenizer.decode(codes, grid=(g, g)))
        seconds = time.perf_counter() - t0
        grid = make_grid(images, ncol=min(len(images), 4))
        files = self._save("t2i", [grid, *images], dict(prompt=prompts[0], seed=seed, sampling=sc.to_dict()))
        return dict(grid=grid, images=images, files=files, seconds=seconds,
                    report=f"{len(images)} images of {prompts[0]!r} in {seconds:.2f} s ({sc.steps} steps, "
                           f"guidance {sc.cfg_scale:g})")

    def canvas_limit(self) -> int:
        """Largest canvas side in pixels the Outpaint tab offers (the editing size limit, square)."""
        g, f = self.model.config.grid_size, self.tokenizer.downsample
        return int((MAX_CANVAS_FACTOR ** 0.5) * g) * f


@dataclass
class TextToImage:
    """What the Text to image tab runs: a text model, its tokenizer and prompt encoder, example prompts."""

    model: Any
    tokenizer: Any
    encoder: Any
    examples: list[str] = field(default_factory=list)

    def recommended(self) -> SamplingConfig:
        return resolve_sampling(self.model)

    def sampling(self, steps: Any = None, cfg_scale: Any = None, temperature: Any = None) -> SamplingConfig:
        """The model's recommended settings with the tab's values replaced (checked)."""
        given: dict[str, Any] = {}
        if steps is not None:
            if float(steps) != int(steps):
                raise ARPGError(f"steps must be a whole number, got {steps}")
            given["steps"] = int(steps)
        for k, v in (("cfg_scale", cfg_scale), ("temperature", temperature)):
            if v is not None:
                given[k] = float(v)
        sc = resolve_sampling(self.model, **given)
        sc.validate(self.model.config.n_cells)
        return sc


def load_text_to_image(model_path: str | None, tokenizer_path: str | None, device: Any) -> TextToImage | None:
    """The given text-to-image pair, or the shipped demo's (None when neither is there)."""
    from ..demo.assets import T2I_PATHS, load_t2i
    from ..demo.scenes import t2i_examples
    from ..sampling.text_folder import text_encoder_for

    if model_path is None and not T2I_PATHS.exist():
        return None
    model, tok = load_t2i(torch.device(device), model_path, tokenizer_path)
    if not model.config.texted:
        raise ARPGError(f"--t2i-model {model_path} is a class-conditional model, not a text-to-image one")
    encoder = text_encoder_for(model, None, torch.device(device))
    return TextToImage(model, tok, encoder, t2i_examples() if model_path is None else [])


def make_backend(model_path: str | None = None, tokenizer_path: str | None = None, *, device: Any = "cpu",
                 names_file: str | None = None, control_paths: Sequence[str] = (), t2i_model: str | None = None,
                 t2i_tokenizer: str | None = None) -> AppBackend:
    """Load a pair for the app: the given weights, or the shipped demo weights (with the held-out examples and
    the shipped ControlARPG demo weights); ``control_paths`` add ControlARPG models for the Control tab;
    ``t2i_model`` / ``t2i_tokenizer`` the Text to image tab's model (default: the shipped text-to-image demo)."""
    if (t2i_model is None) != (t2i_tokenizer is None):
        raise ARPGError("give --t2i-model and --t2i-tokenizer together")
    is_demo = model_path is None
    model, tok = load_pair(model_path, tokenizer_path, torch.device(device))
    names = class_names(model.config.num_classes, is_demo=is_demo, names_file=names_file)
    examples = demo_examples() if is_demo else []
    paths = [str(p) for p in control_paths]
    if is_demo and not paths:
        paths = [str(control_model_path(k)) for k in CONDITION_KINDS if has_control_weights(k)]
    controls = {}
    for p in paths:
        m = load_model(p, device=torch.device(device))
        if not m.config.controlled:
            raise ARPGError(f"--control-model {p} has no condition encoder (it is not a ControlARPG model)")
        if (m.config.grid_size, m.config.vocab_size) != (model.config.grid_size, model.config.vocab_size):
            raise ARPGError(f"--control-model {p} has a {m.config.grid_size}x{m.config.grid_size} grid and "
                            f"{m.config.vocab_size} codes; the app's model has {model.config.grid_size}x"
                            f"{model.config.grid_size} and {model.config.vocab_size}")
        controls[m.config.condition_kind or f"condition {len(controls) + 1}"] = m
    return AppBackend(model, tok, names, examples, controls=controls,
                      text_to_image=load_text_to_image(t2i_model, t2i_tokenizer, device))
