"""``arpg demo --retrain``: rebuild the shipped demo weights end to end with the library's trainers.

:func:`retrain_configs` holds the three runs (tokenizer, code extraction, ARPG) as library configs;
:func:`retrain_commands` is the same recipe as the ``arpg`` command lines a user would type (recorded in
the model card; a test checks that they parse to exactly these configs). Wall time on 2 CPU cores is
recorded in ``weights/demo_card.json``; the run writes into ``work_dir`` and, with ``install=True``,
copies the results over the shipped files. Every run is resumable: an interrupted retrain continues.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..sampling.recipes import get_recipe
from ..vq import load_tokenizer
from ..model.weights import load_model, read_checkpoint
from ..model.config import ARPGConfig
from ..data.animal_mnist import HELDOUT_PER_CLASS, SPLIT_SEED, TRAIN_PER_CLASS
from ..data.extract import ExtractConfig, extract_codes
from ..model import ARPG, count_parameters
from ..train import checkpointing as ckpt
from ..train.config import TrainConfig
from ..train.trainer import train
from ..train.vq_config import TrainVQConfig
from ..train.vq_trainer import train_vq
from .assets import demo_card, write_demo_folders

VQ_STEPS = 3000
VQ_CODEBOOK = 256
ARPG_STEPS = 6000
ARPG_EMA = 0.999
# The EMA weights sample better than the raw ones at this size; they are what ships. (The previous demo model
# needed a second, warm-restart run of 3000 steps; with the class-conditioning options of the ARPG-demo
# preset, one run of 6000 steps reaches a lower loss, see the model card.)
FINAL = Path("arpg") / "final-ema.safetensors"


def retrain_commands(work: str) -> list[list[str]]:
    """The exact ``arpg`` invocations that build the shipped weights (each one resumable)."""
    w = Path(work)
    return [
        # 256 codes (not 512): silhouette patches need few, and fewer near-duplicate codes make each
        # token easier to predict. L1 keeps edges sharp, which the classifier-based quality figures reward.
        ["train-vq", "--data", "animal-mnist", "--out", str(w / "vq"), "--preset", "VQ-demo", "--image-size", "32",
         "--channels", "1", "--codebook-size", str(VQ_CODEBOOK), "--recon-loss", "l1", "--steps", str(VQ_STEPS),
         "--batch-size", "32", "--eval-every", "500", "--resume", "auto"],
        ["extract-codes", "--data", "animal-mnist", "--tokenizer", str(w / "vq" / "tokenizer.safetensors"),
         "--out", str(w / "codes"), "--ten-crop"],
        ["train", "--codes", str(w / "codes"), "--out", str(w / "arpg"), "--preset", "ARPG-demo",
         "--steps", str(ARPG_STEPS), "--batch-size", "64", "--lr", "4e-3", "--min-lr", "4e-5", "--warmup", "0.03", "--dtype", "fp32",
         "--ema", str(ARPG_EMA), "--save-every", "500", "--resume", "auto",
         "--tokenizer", str(w / "vq" / "tokenizer.safetensors")],
    ]


def retrain_configs(work: str) -> tuple[TrainVQConfig, ExtractConfig, TrainConfig]:
    """The three runs of :func:`retrain_commands`, as the library configs they parse to."""
    w = Path(work)
    tok = str(w / "vq" / "tokenizer.safetensors")
    return (
        TrainVQConfig(data="animal-mnist", out=str(w / "vq"), preset="VQ-demo", image_size=32, channels=1,
                      codebook_size=VQ_CODEBOOK, recon_loss="l1", steps=VQ_STEPS, batch_size=32, eval_every=500),
        ExtractConfig(data="animal-mnist", out=str(w / "codes"), tokenizer=tok, crops="ten"),
        TrainConfig(codes=str(w / "codes"), out=str(w / "arpg"), preset="ARPG-demo", steps=ARPG_STEPS,
                    batch_size=64, lr=4e-3, min_lr=4e-5, warmup=0.03, dtype="fp32", ema=ARPG_EMA, save_every=500,
                    resume="auto", tokenizer=tok),
    )


def retrain(work_dir: str, install: bool = False, log=print) -> dict[str, float]:
    """Run the three trainings of :func:`retrain_configs` (each resumes where it stopped; a finished one is
    skipped) and return their wall times in seconds."""
    vq_cfg, extract_cfg, train_cfg = retrain_configs(work_dir)
    times: dict[str, float] = {}
    t = time.perf_counter()
    log(f"[retrain] tokenizer: {VQ_STEPS} steps into {vq_cfg.out}")
    train_vq(vq_cfg, resume="auto")
    times["train-vq"] = time.perf_counter() - t
    t = time.perf_counter()
    log(f"[retrain] codes: ten-crop into {extract_cfg.out}")
    extract_codes(extract_cfg)
    times["extract-codes"] = time.perf_counter() - t
    t = time.perf_counter()
    done = ckpt.list_checkpoints(train_cfg.out)
    if done and done[-1][0] >= ARPG_STEPS:
        log(f"[retrain] ARPG: already trained ({done[-1][1]})")
    else:
        log(f"[retrain] ARPG: {ARPG_STEPS} steps into {train_cfg.out}")
        train(train_cfg)
    times["train"] = time.perf_counter() - t
    if install:
        model = load_model(Path(work_dir) / FINAL)
        model.sampling = get_recipe("demo").sampling
        write_demo_folders(model, load_tokenizer(Path(work_dir) / "vq" / "tokenizer.safetensors"), demo_card())
    return times


def _last_json_line(path: Path) -> dict:
    lines = [l for l in Path(path).read_text().splitlines() if l.strip().startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def build_card(work_dir: str, wall_times: dict[str, float], quality: dict | None = None,
               extra: dict | None = None) -> dict:
    """The model card for weights trained by :func:`retrain` in ``work_dir``. Measurements made apart from
    the retrain (the shipped card's held-out code losses, recipe sweeps, wall-time notes) go in ``extra``."""
    w = Path(work_dir)
    _, vq_extras = read_checkpoint(w / "vq" / "tokenizer.safetensors")
    _, arpg_extras = read_checkpoint(w / FINAL)
    vq_log = _last_json_line(w / "vq" / "log.jsonl")
    arpg_log = _last_json_line(w / FINAL.parent / "log.jsonl")
    card = {
        "summary": {"data": "Animal-MNIST (animal-mnist 0.4), 32x32 padded grayscale", "grid": "8x8 codes",
                    "arpg_params": None, "final_arpg_loss": arpg_log.get("loss")},
        "data_split": {"train_per_class": TRAIN_PER_CLASS, "heldout_per_class": HELDOUT_PER_CLASS,
                       "rule": f"per class, numpy.random.default_rng({SPLIT_SEED}).permutation; first "
                               f"{TRAIN_PER_CLASS} train, rest held-out"},
        "vq_config": vq_extras.get("config"),
        "arpg_config": arpg_extras.get("config"),
        "commands": ["arpg " + " ".join(c) for c in retrain_commands("WORK")],
        "steps": {"train-vq": VQ_STEPS, "train": ARPG_STEPS},
        "shipped_weights": f"the EMA (decay {ARPG_EMA}) of the training run's weights ({FINAL})",
        "wall_time_s": {k: round(v, 1) for k, v in wall_times.items()},
        "final_tokenizer_log": vq_log,
        "final_arpg_log": arpg_log,
        "machine": "2 CPU cores (AMD EPYC), no GPU, torch CPU build",
    }
    if card["arpg_config"]:
        card["summary"]["arpg_params"] = count_parameters(ARPG(ARPGConfig.from_dict(card["arpg_config"])))
    if quality:
        card["quality"] = quality
    card.update(extra or {})
    json.dumps(card)  # fail early on anything unserialisable
    return card
