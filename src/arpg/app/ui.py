"""The gradio page of ``arpg app``: six tabs over :class:`~arpg.app.backend.AppBackend`.

Jobs run one at a time per event (``concurrency_limit=1``: the model is shared and CPU cores are few), in
a queue of at most ``max_queue`` waiting jobs; a button pressed again while its job is pending is ignored
(``trigger_mode="once"``), so a browser session has one job of a kind at a time. Bad inputs come back as
one line in the tab's status box; the app keeps serving.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from ..errors import ARPGError
from ..sampling.guidance import CFG_SCHEDULES
from ..sampling.orders import ORDERS
from .backend import ANCHORS, MAX_UPLOAD_SIDE, AppBackend

log = logging.getLogger("arpg.app")

#: Images are shown at least this many pixels a side (nearest-neighbour; downloads keep the native size).
DISPLAY_SIDE = 256
#: Upload size cap handed to gradio.
MAX_FILE_SIZE = "8mb"


def display(image: np.ndarray | None) -> np.ndarray | None:
    """``image`` enlarged by a whole factor (nearest) to at least :data:`DISPLAY_SIDE`, as RGB."""
    if image is None:
        return None
    img = image if image.ndim == 3 else image[..., None]
    k = max(1, -(-DISPLAY_SIDE // max(img.shape[:2])))
    img = img.repeat(k, 0).repeat(k, 1)
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def editor_value(image: np.ndarray | None) -> dict[str, Any] | None:
    shown = display(image)
    return None if shown is None else dict(background=shown, layers=[], composite=shown)


def guarded(fn: Callable[..., tuple], n_outputs: int) -> Callable[..., tuple]:
    """Run a tab's job; a bad input becomes its one-line message in the status box, anything unexpected
    an 'internal error' line (the traceback goes to the server log)."""
    def run(*args: Any) -> tuple:
        try:
            return fn(*args)
        except ARPGError as e:
            message = f"**Error:** {e}"
        except MemoryError:
            message = "**Error:** out of memory: ask for fewer images or a smaller canvas"
        except Exception as e:  # noqa: BLE001 - the page must stay up whatever a job does
            log.exception("app job failed")
            message = f"**Internal error:** {type(e).__name__}: {e}"
        return (None,) * (n_outputs - 1) + (message,)
    run.__name__ = fn.__name__
    return run


def build_app(backend: AppBackend, *, max_queue: int = 16, title: str = "ARPG"):
    """The gradio Blocks of the app (not launched)."""
    import gradio as gr  # optional extra: arpg[app]

    rec = backend.recommended()
    n_cells = backend.model.config.n_cells
    choices = backend.label_choices()
    examples = {caption: (img, label) for caption, img, label in backend.examples}
    H, W = backend.image_size
    limit = backend.canvas_limit()
    f = backend.tokenizer.downsample

    def steps_progress(progress) -> Callable[[int, int], None]:
        return lambda done, total: progress((done, total), desc="decoding", unit="steps")

    with gr.Blocks(title=title) as app:
        gr.Markdown(f"# {title}: randomized parallel decoding\nModel: {n_cells} cells "
                    f"({backend.model.config.grid_size}x{backend.model.config.grid_size}), images {H}x{W}, "
                    f"{len(choices)} classes. Settings below start at the model's recommended ones.")
        with gr.Accordion("Sampling settings (the class tabs; the seed serves every tab)", open=False):
            with gr.Row():
                steps = gr.Slider(1, n_cells, value=rec.steps, step=1, label="steps")
                cfg_scale = gr.Number(value=rec.cfg_scale, label="guidance scale")
                cfg_schedule = gr.Dropdown(list(CFG_SCHEDULES), value=rec.cfg_schedule, label="guidance schedule")
            with gr.Row():
                temperature = gr.Number(value=rec.temperature, label="temperature")
                order = gr.Dropdown(list(ORDERS), value=rec.order, label="order")
                attention = gr.Dropdown(["block", "causal"], value=rec.attention, label="attention")
                seed = gr.Number(value=0, precision=0, label="seed")
        settings = [steps, cfg_scale, cfg_schedule, temperature, order, attention]

        with gr.Tab("Generate"):
            with gr.Row():
                gen_labels = gr.Dropdown(choices, value=choices[:min(4, len(choices))], multiselect=True,
                                         label="classes", elem_id="gen-labels")
                per_class = gr.Slider(1, 16, value=4, step=1, label="images per class")
            gen_button = gr.Button("Generate", variant="primary", elem_id="gen-run")
            gen_status = gr.Markdown(elem_id="gen-status")
            gen_grid = gr.Image(label="samples", interactive=False, elem_id="gen-grid")
            gen_files = gr.File(label="download (PNG, native size)", file_count="multiple")

        with gr.Tab("Inpaint / class edit"):
            gr.Markdown("Paint the region to regenerate. The same class inpaints; another class edits.")
            with gr.Row():
                inp_example = gr.Dropdown(list(examples), value=None, label="held-out example",
                                          elem_id="inp-example")
                inp_label = gr.Dropdown(choices, value=choices[0], label="class to generate under",
                                        elem_id="inp-label")
                inp_fit = gr.Checkbox(value=True, label=f"fit the image to {H}x{W} (centre crop + resize)")
            inp_editor = gr.ImageEditor(type="numpy", label="image (paint the mask)", elem_id="inp-editor",
                                        brush=gr.Brush(colors=["#ff0000"], default_size=24, color_mode="fixed"),
                                        transforms=(), layers=False, canvas_size=(DISPLAY_SIDE, DISPLAY_SIDE))
            inp_button = gr.Button("Regenerate the painted region", variant="primary", elem_id="inp-run")
            inp_status = gr.Markdown(elem_id="inp-status")
            with gr.Row():
                inp_known = gr.Image(label="known cells (what the model saw)", interactive=False)
                inp_result = gr.Image(label="result", interactive=False, elem_id="inp-result")
            inp_files = gr.File(label="download (PNG, native size)", file_count="multiple")

        with gr.Tab("Outpaint"):
            with gr.Row():
                out_example = gr.Dropdown(list(examples), value=None, label="held-out example", elem_id="out-example")
                out_label = gr.Dropdown(choices, value=choices[0], label="class")
                out_fit = gr.Checkbox(value=True, label=f"fit the image to {H}x{W}")
            out_image = gr.Image(type="numpy", label="source", sources=["upload"], elem_id="out-image")
            with gr.Row():
                out_h = gr.Number(value=H, precision=0, label=f"canvas height (px, multiple of {f}, <= {limit})")
                out_w = gr.Number(value=2 * W, precision=0, label=f"canvas width (px, <= {limit})")
                out_anchor = gr.Dropdown(list(ANCHORS), value="centre", label="where the source sits")
            out_button = gr.Button("Outpaint", variant="primary", elem_id="out-run")
            out_status = gr.Markdown(elem_id="out-status")
            out_result = gr.Image(label="result", interactive=False, elem_id="out-result")
            out_files = gr.File(label="download (PNG, native size)", file_count="multiple")

        with gr.Tab("Expand"):
            with gr.Row():
                exp_example = gr.Dropdown(list(examples), value=None, label="held-out example", elem_id="exp-example")
                exp_label = gr.Dropdown(choices, value=choices[0], label="class")
                exp_fit = gr.Checkbox(value=True, label=f"fit the image to {H}x{W}")
            exp_image = gr.Image(type="numpy", label="source", sources=["upload"], elem_id="exp-image")
            exp_factor = gr.Slider(2, 4, value=2, step=1, label="factor")
            exp_button = gr.Button("Expand", variant="primary", elem_id="exp-run")
            exp_status = gr.Markdown(elem_id="exp-status")
            exp_result = gr.Image(label="result", interactive=False, elem_id="exp-result")
            exp_files = gr.File(label="download (PNG, native size)", file_count="multiple")

        with gr.Tab("Control"):
            kinds = list(backend.controls)
            gr.Markdown("ControlARPG: the class follows a condition map made from the image (or one you upload)."
                        if kinds else "No ControlARPG weights are loaded: start the app with --control-model PATH.")
            with gr.Row():
                ctl_example = gr.Dropdown(list(examples), value=None, label="held-out example", elem_id="ctl-example")
                ctl_kind = gr.Dropdown(kinds, value=kinds[0] if kinds else None, label="condition", elem_id="ctl-kind")
                ctl_label = gr.Dropdown(choices, value=choices[0], label="class", elem_id="ctl-label")
                ctl_guidance = gr.Dropdown(["keep", "drop"], value="keep",
                                           label="guidance's unconditional half: condition kept / dropped")
                ctl_fit = gr.Checkbox(value=True, label=f"fit the image to {H}x{W}")
            with gr.Row():
                ctl_image = gr.Image(type="numpy", label="image (the condition is made from it)", sources=["upload"],
                                     elem_id="ctl-image")
                ctl_map = gr.Image(type="numpy", label="or: your own condition map (optional)", sources=["upload"],
                                   elem_id="ctl-map")
            ctl_button = gr.Button("Generate under the condition", variant="primary", elem_id="ctl-run")
            ctl_status = gr.Markdown(elem_id="ctl-status")
            with gr.Row():
                ctl_cond = gr.Image(label="condition used", interactive=False, elem_id="ctl-condition")
                ctl_result = gr.Image(label="result", interactive=False, elem_id="ctl-result")
            ctl_files = gr.File(label="download (PNG, native size)", file_count="multiple")

        with gr.Tab("Text to image"):
            t2i = backend.text_to_image
            t2i_rec = t2i.recommended() if t2i else rec
            gr.Markdown("Describe a scene; the text-to-image model draws it (its own settings, below). The demo "
                        "model knows one grammar: 'a red cat', 'two zebras', 'a blue dog to the left of a yellow "
                        "horse', 'a white cow above a green sheep'." if t2i else
                        "No text-to-image model is loaded: start the app with --t2i-model and --t2i-tokenizer.")
            with gr.Row():
                t2i_prompt = gr.Textbox(value="", label="prompt", elem_id="t2i-prompt",
                                        placeholder="a red cat above a blue dog (or pick an example)")
                t2i_example = gr.Dropdown((t2i.examples if t2i else []), value=None, label="example prompts",
                                          elem_id="t2i-example")
            with gr.Row():
                t2i_num = gr.Slider(1, 16, value=8, step=1, label="images")
                t2i_steps = gr.Slider(1, (t2i.model.config.n_cells if t2i else n_cells), value=t2i_rec.steps, step=1,
                                      label="steps")
                t2i_cfg = gr.Number(value=t2i_rec.cfg_scale, label="guidance scale")
                t2i_temp = gr.Number(value=t2i_rec.temperature, label="temperature")
            t2i_button = gr.Button("Draw", variant="primary", elem_id="t2i-run")
            t2i_status = gr.Markdown(elem_id="t2i-status")
            t2i_grid = gr.Image(label="samples", interactive=False, elem_id="t2i-grid")
            t2i_files = gr.File(label="download (PNG, native size)", file_count="multiple")

        # -- events -----------------------------------------------------------------------------------
        def pick(caption):
            if caption not in examples:
                return None, gr.update()
            img, label = examples[caption]
            return display(img), choices[label]

        inp_example.change(lambda c: (editor_value(examples[c][0]) if c in examples else None,
                                      choices[examples[c][1]] if c in examples else gr.update()),
                           inp_example, [inp_editor, inp_label])
        out_example.change(pick, out_example, [out_image, out_label])
        exp_example.change(pick, exp_example, [exp_image, exp_label])
        ctl_example.change(pick, ctl_example, [ctl_image, ctl_label])

        def run_generate(labels, n, *rest, progress=gr.Progress()):
            sc = backend.sampling(*rest[:6])
            r = backend.run_generate(labels, n, sc, rest[6], on_step=steps_progress(progress))
            return display(r["grid"]), r["files"], r["report"]

        def run_inpaint(value, label, fit, *rest, progress=gr.Progress()):
            sc = backend.sampling(*rest[:6])
            r = backend.run_inpaint(value, label, sc, rest[6], fit, on_step=steps_progress(progress))
            return display(r["known"]), display(r["result"]), r["files"], r["report"]

        def run_outpaint(image, h, w, anchor, label, fit, *rest, progress=gr.Progress(track_tqdm=True)):
            sc = backend.sampling(*rest[:6])
            r = backend.run_outpaint(image, h, w, anchor, label, sc, rest[6], fit)
            return display(r["result"]), r["files"], r["report"]

        def run_expand(image, factor, label, fit, *rest, progress=gr.Progress(track_tqdm=True)):
            sc = backend.sampling(*rest[:6])
            r = backend.run_expand(image, factor, label, sc, rest[6], fit, on_step=steps_progress(progress))
            return display(r["result"]), r["files"], r["report"]

        def run_control(image, cmap, kind, label, guidance, fit, *rest, progress=gr.Progress()):
            sc = backend.sampling(*rest[:6])
            r = backend.run_control(image, cmap, kind, label, guidance, sc, rest[6], fit,
                                    on_step=steps_progress(progress))
            return display(r["condition"]), display(r["result"]), r["files"], r["report"]

        t2i_example.change(lambda c: c or gr.update(), t2i_example, t2i_prompt)

        def run_t2i(prompt, n, t_steps, t_cfg, t_temp, seed_value, progress=gr.Progress()):
            t2i = backend.text_to_image
            sc = t2i.sampling(t_steps, t_cfg, t_temp) if t2i else None
            r = backend.run_t2i(prompt, n, sc, seed_value, on_step=steps_progress(progress))
            return display(r["grid"]), r["files"], r["report"]

        common = settings + [seed]
        event = dict(concurrency_limit=1, trigger_mode="once")
        gen_button.click(guarded(run_generate, 3), [gen_labels, per_class] + common,
                         [gen_grid, gen_files, gen_status], **event)
        inp_button.click(guarded(run_inpaint, 4), [inp_editor, inp_label, inp_fit] + common,
                         [inp_known, inp_result, inp_files, inp_status], **event)
        out_button.click(guarded(run_outpaint, 3), [out_image, out_h, out_w, out_anchor, out_label, out_fit] + common,
                         [out_result, out_files, out_status], **event)
        exp_button.click(guarded(run_expand, 3), [exp_image, exp_factor, exp_label, exp_fit] + common,
                         [exp_result, exp_files, exp_status], **event)
        ctl_button.click(guarded(run_control, 4), [ctl_image, ctl_map, ctl_kind, ctl_label, ctl_guidance, ctl_fit]
                         + common, [ctl_cond, ctl_result, ctl_files, ctl_status], **event)
        t2i_button.click(guarded(run_t2i, 3), [t2i_prompt, t2i_num, t2i_steps, t2i_cfg, t2i_temp, seed],
                         [t2i_grid, t2i_files, t2i_status], **event)
    app.queue(max_size=max_queue, default_concurrency_limit=1)
    app.arpg_limits = dict(max_queue=max_queue, max_file_size=MAX_FILE_SIZE, max_upload_side=MAX_UPLOAD_SIDE)
    return app
