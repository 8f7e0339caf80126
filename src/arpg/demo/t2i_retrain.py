"""Rebuild the shipped text-to-image demo end to end: ``python -m arpg.demo.t2i_retrain WORK [--install]``.

Five stages, each resumable (a finished one is skipped; an interrupted training continues):

1. render the caption set (:mod:`arpg.demo.scenes`, :data:`SCENES` scenes from the Animal-MNIST train split);
2. train the word-level prompt encoder on its captions (:mod:`arpg.text.words`);
3. ``arpg train-vq`` a tokenizer for 64 px RGB scenes (8x downsampling: 8x8 codes);
4. ``arpg extract-codes --captions`` (one crop: a mirror would swap "left" and "right");
5. ``arpg train`` the text-to-image model on the codes and prompt features.

:func:`t2i_commands` are the ``arpg`` command lines of stages 3-5 (recorded in the model card); the stages
run as library calls with the configs they parse to (:func:`t2i_configs`). With
``--install`` the results replace the shipped ``weights/demo-t2i*`` folders and ``weights/t2i_card.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..data.captions import read_caption_folder
from ..data.extract import ExtractConfig, extract_codes
from ..model.weights import load_model
from ..sampling.recipes import get_recipe
from ..train.config import TrainConfig
from ..train.trainer import train
from ..train.vq_config import TrainVQConfig
from ..train.vq_trainer import train_vq
from ..vq import load_tokenizer
from .assets import T2I_PATHS, write_t2i_folders
from .retrain import _last_json_line
from .scenes import HELDOUT_PAIRS, parse, prompt_facts, write_scene_set

SCENES = 24000
TEXT_LEN = 12  # the longest caption of the grammar has 10 words
TEXT_STEPS = 1500
VQ_STEPS = 2400
ARPG_STEPS = 4500
ARPG_EMA = 0.999
FINAL = Path("arpg") / "final-ema.safetensors"


def t2i_commands(work: str) -> list[list[str]]:
    """The ``arpg`` command lines of stages 3-5 (each resumable); they parse to :func:`t2i_configs`."""
    w = Path(work)
    tok = str(w / "vq" / "tokenizer.safetensors")
    return [
        # L2, not the class demo's L1: most pixels of a scene are black, and under L1 (whose optimum is the
        # per-pixel median) the decoder sat on an all-black output for 500 steps (PSNR 14.3); L2 left it at once.
        ["train-vq", "--data", str(w / "scenes"), "--out", str(w / "vq"), "--preset", "VQ-scenes", "--image-size",
         "64", "--channels", "3", "--steps", str(VQ_STEPS), "--batch-size", "32", "--recon-loss", "l2",
         "--eval-every", "600", "--resume", "auto"],
        ["extract-codes", "--data", str(w / "scenes"), "--captions", "--text-encoder", str(w / "text"),
         "--text-len", str(TEXT_LEN), "--tokenizer", tok, "--out", str(w / "codes"), "--image-size", "64",
         "--single-crop"],
        ["train", "--codes", str(w / "codes"), "--out", str(w / "arpg"), "--preset", "ARPG-demo-T2I",
         "--steps", str(ARPG_STEPS), "--batch-size", "64", "--lr", "4e-3", "--min-lr", "4e-5", "--warmup", "0.03",
         "--dtype", "fp32", "--ema", str(ARPG_EMA), "--save-every", "500", "--resume", "auto", "--tokenizer", tok],
    ]


def t2i_configs(work: str) -> tuple[TrainVQConfig, ExtractConfig, TrainConfig]:
    """Stages 3-5 as the library configs :func:`t2i_commands` parse to."""
    w = Path(work)
    tok = str(w / "vq" / "tokenizer.safetensors")
    return (
        TrainVQConfig(data=str(w / "scenes"), out=str(w / "vq"), preset="VQ-scenes", image_size=64, channels=3,
                      steps=VQ_STEPS, batch_size=32, recon_loss="l2", eval_every=600),
        ExtractConfig(data=str(w / "scenes"), out=str(w / "codes"), tokenizer=tok, image_size=64, crops="single",
                      captions=True, text_encoder=str(w / "text"), text_len=TEXT_LEN),
        TrainConfig(codes=str(w / "codes"), out=str(w / "arpg"), preset="ARPG-demo-T2I", steps=ARPG_STEPS,
                    batch_size=64, lr=4e-3, min_lr=4e-5, warmup=0.03, dtype="fp32", ema=ARPG_EMA, save_every=500,
                    resume="auto", tokenizer=tok),
    )


def train_scene_encoder(work: str, steps: int = TEXT_STEPS, progress: bool = True) -> dict:
    """Stage 2: the word encoder, trained to read each caption's form, relation, animals and colours back."""
    w = Path(work)
    out = w / "text"
    record_path = out / "training.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    from ..text.words import train_word_encoder

    captions = read_caption_folder(w / "scenes").captions
    facts = [prompt_facts(parse(c)) for c in captions]
    t = time.perf_counter()
    encoder, record = train_word_encoder(captions, {k: [f[k] for f in facts] for k in facts[0]}, length=TEXT_LEN,
                                         steps=steps, progress=progress)
    record["seconds"] = round(time.perf_counter() - t, 1)
    encoder.save(out, card=_encoder_card(record))
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def _encoder_card(record: dict) -> str:
    acc = ", ".join(f"{k} {v:.3f}" for k, v in record["train_accuracy"].items())
    return ("# Word-level prompt encoder of the text-to-image demo\n\n"
            f"{record['n_layer']} transformer layers, {record['dim']} wide, {record['vocab_size']} words, "
            f"{record['length']} positions; trained from scratch for {record['steps']} steps to read each caption's "
            f"form, relation, animals and colours back (training accuracy: {acc}). "
            "Built by `python -m arpg.demo.t2i_retrain`.\n")


def retrain_t2i(work_dir: str, install: bool = False, log=print) -> dict[str, float]:
    """Run the five stages in ``work_dir``; returns their wall times in seconds."""
    w = Path(work_dir)
    times: dict[str, float] = {}

    def timed(name: str, fn) -> None:
        t = time.perf_counter()
        log(f"[t2i retrain] {name}")
        fn()
        times[name] = round(time.perf_counter() - t, 1)

    vq_cfg, extract_cfg, train_cfg = t2i_configs(work_dir)
    timed("scenes", lambda: write_scene_set(w / "scenes", SCENES, "train", seed=0))
    timed("text-encoder", lambda: train_scene_encoder(work_dir))
    timed("train-vq", lambda: train_vq(vq_cfg, resume="auto"))
    timed("extract-codes", lambda: extract_codes(extract_cfg))
    if (w / FINAL).is_file():
        times["train"] = 0.0  # finished before: nothing to do
    else:
        timed("train", lambda: train(train_cfg))
    if install:
        install_t2i(work_dir, build_t2i_card(work_dir, times))
    return times


def install_t2i(work_dir: str, card: dict) -> None:
    """Write ``card`` as ``weights/t2i_card.json`` and copy the trained model (EMA weights, with the recipe's
    settings), tokenizer and encoder over the shipped ``weights/demo-t2i*`` folders (their model cards are made
    from ``card``). The judge's table is not in a fresh card: run ``python -m arpg.demo.t2i_quality`` after."""
    from ..text.words import load_word_encoder

    w = Path(work_dir)
    T2I_PATHS.card.write_text(json.dumps(card, indent=1) + "\n")
    model = load_model(w / FINAL)
    model.sampling = get_recipe("demo-t2i").sampling
    model.text_encoder = T2I_PATHS.text.name
    write_t2i_folders(model, load_tokenizer(w / "vq" / "tokenizer.safetensors"), load_word_encoder(w / "text"),
                      (w / "text" / "README.md").read_text())


def build_t2i_card(work_dir: str, wall_times: dict[str, float], extra: dict | None = None) -> dict:
    """The full record of a text-to-image demo trained in ``work_dir`` (``weights/t2i_card.json``)."""
    from ..model import ARPG, count_parameters
    from ..model.config import ARPGConfig
    from ..util.checkpoints import read_checkpoint

    w = Path(work_dir)
    _, vq_extras = read_checkpoint(w / "vq" / "tokenizer.safetensors")
    _, arpg_extras = read_checkpoint(w / FINAL)
    arpg_config = arpg_extras.get("config")
    card = {
        "summary": {"data": f"{SCENES} Animal-MNIST scenes (64x64 RGB, train-split silhouettes), captions from the "
                            "demo grammar (arpg.demo.scenes)", "grid": "8x8 codes",
                    "arpg_params": count_parameters(ARPG(ARPGConfig.from_dict(arpg_config))) if arpg_config else None},
        "heldout_pairs": [list(p) for p in HELDOUT_PAIRS],
        "commands": [f"python -m arpg.demo.scenes WORK/scenes --num {SCENES}",
                     "python -m arpg.demo.t2i_retrain WORK   # stage 2, the word encoder: "
                     "arpg.demo.t2i_retrain.train_scene_encoder"]
                    + ["arpg " + " ".join(c) for c in t2i_commands("WORK")],
        "steps": {"text-encoder": TEXT_STEPS, "train-vq": VQ_STEPS, "train": ARPG_STEPS},
        "shipped_weights": f"the EMA (decay {ARPG_EMA}) of the training run's weights ({FINAL})",
        "wall_time_s": {k: round(v, 1) for k, v in wall_times.items()},
        "text_encoder": json.loads((w / "text" / "training.json").read_text()),
        "vq_config": vq_extras.get("config"),
        "arpg_config": arpg_config,
        "final_tokenizer_log": _last_json_line(w / "vq" / "log.jsonl"),
        "final_arpg_log": _last_json_line(w / FINAL.parent / "log.jsonl"),
        "machine": "2 CPU cores (AMD EPYC, AVX2), no GPU, torch CPU build",
    }
    card.update(extra or {})
    json.dumps(card)  # fail early on anything unserialisable
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m arpg.demo.t2i_retrain", description=__doc__.split("\n\n")[0])
    p.add_argument("work", help="working folder (every stage resumes from what is there)")
    p.add_argument("--install", action="store_true", help="copy the results over the shipped demo-t2i weights")
    args = p.parse_args(argv)
    times = retrain_t2i(args.work, install=args.install)
    (Path(args.work) / "wall_times.json").write_text(json.dumps(times, indent=1) + "\n")
    print(json.dumps({"wall_time_s": times, "heldout_pairs": HELDOUT_PAIRS}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
