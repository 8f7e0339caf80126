"""Every command, fed bad input: exit status 2, exactly one line on stderr, no traceback, the right words.

The table is driven through :func:`arpg.cli.main` in this process (fast); a few cases go through a real
subprocess too, so the console script itself is covered. Placeholders in the argument lists are filled
from the ``env`` fixture: tiny weights, images, corrupt and unsafe files, code sets.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from arpg.cli import main
from arpg.data.codes import write_code_set


class _Evil:
    """Unpickling this would run code (it writes a marker file): every loader must refuse it."""

    marker = None

    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


@pytest.fixture(scope="module")
def env(tiny_weights, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    _Evil.marker = str(d / "PWNED")
    rng = np.random.default_rng(11)
    files = {
        "M": str(tiny_weights / "arpg.safetensors"), "T": str(tiny_weights / "vq.safetensors"),
        "IMG": str(tiny_weights / "img.png"), "MASK": str(tiny_weights / "mask.png"),
        "DIR": str(d), "MISSING": str(d / "missing.pt"), "PWNED": _Evil.marker,
        "CM": str(tiny_weights / "arpg_control.safetensors"), "CMAP": str(tiny_weights / "cmap.png"),
    }
    Image.fromarray(rng.integers(0, 256, (8, 12), dtype=np.uint8)).save(d / "wide.png")
    files["WIDE"] = str(d / "wide.png")
    (d / "afile").write_text("x")
    files["FILE"] = str(d / "afile")
    files["UNDERFILE"] = str(d / "afile" / "sub")
    files["UNWRITABLE"] = "/proc/arpg-cannot-write-here"
    # Corrupt and unsafe files of every kind a command reads.
    (d / "corrupt.pt").write_bytes(bytes(rng.integers(0, 256, 600, dtype=np.uint8)))
    files["CORRUPT"] = str(d / "corrupt.pt")
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Evil()}, d / "evil.pt")
    files["EVIL"] = str(d / "evil.pt")
    with open(d / "evil_raw.pt", "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    files["EVILRAW"] = str(d / "evil_raw.pt")
    (d / "notimage.png").write_text("not an image")
    files["NOTIMG"] = str(d / "notimage.png")
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).save(d / "img30.png")
    files["IMG30"] = str(d / "img30.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(d / "mask8.png")
    files["MASK8"] = str(d / "mask8.png")
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(d / "maskall.png")
    files["MASKALL"] = str(d / "maskall.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(d / "masknone.png")
    files["MASKNONE"] = str(d / "masknone.png")
    (d / "foreign").mkdir()
    (d / "foreign" / "notes.txt").write_text("someone else's folder")
    files["FOREIGN"] = str(d / "foreign")
    # Code sets: a good one, and ones whose labels / codes are out of range for the model.
    codes = rng.integers(0, 16, (24, 2, 16))
    labels = rng.integers(0, 4, 24)
    write_code_set(d / "codes", codes, labels, vocab_size=16, class_names=list("abcd"), shard_size=12)
    files["CODES"] = str(d / "codes")
    bad_labels = labels.copy()
    bad_labels[5] = 7
    write_code_set(d / "codes_badlabel", codes, labels, vocab_size=16, class_names=list("abcd"), shard_size=12)
    np.save(d / "codes_badlabel" / "labels-00000.npy", bad_labels[:12])
    files["BADLABELS"] = str(d / "codes_badlabel")
    write_code_set(d / "codes_badcode", codes, labels, vocab_size=16, class_names=list("abcd"), shard_size=12)
    bad_codes = codes[12:].copy()
    bad_codes[3, 1, 5] = 40
    np.save(d / "codes_badcode" / "codes-00001.npy", bad_codes.astype(np.uint16))
    files["BADCODES"] = str(d / "codes_badcode")
    write_code_set(d / "codes_evil", codes, labels, vocab_size=16, class_names=list("abcd"), shard_size=12)
    np.save(d / "codes_evil" / "labels-00000.npy", np.array([_Evil()] * 12, dtype=object), allow_pickle=True)
    files["EVILSHARD"] = str(d / "codes_evil")
    # Sample sets for eval
    np.savez(d / "samples.npz", arr_0=rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8))
    files["NPZ"] = str(d / "samples.npz")
    (d / "corrupt.npz").write_bytes(b"PK\x03\x04 broken zip")
    files["BADNPZ"] = str(d / "corrupt.npz")
    np.savez(d / "evil.npz", arr_0=np.array([_Evil()], dtype=object), allow_pickle=True)
    files["EVILNPZ"] = str(d / "evil.npz")
    # Text-to-image: a tiny text model (no prompt encoder stored with it) and prompt files.
    from arpg import ARPG, save_model
    from arpg.vq import load_tokenizer

    vocab = load_tokenizer(files["T"]).codebook_size
    save_model(ARPG.from_preset("ARPG-tiny-T2I", vocab_size=vocab, grid_size=4), d / "text_model.safetensors")
    files["TM"] = str(d / "text_model.safetensors")
    (d / "prompts.jsonl").write_text('{"prompt": "a red cat"}\n')
    files["PROMPTS"] = str(d / "prompts.jsonl")
    (d / "badprompts.jsonl").write_text('{"prompt": "a red cat"\n')
    files["BADPROMPTS"] = str(d / "badprompts.jsonl")
    (d / "emptyprompt.jsonl").write_text('{"prompt": "  "}\n')
    files["EMPTYPROMPT"] = str(d / "emptyprompt.jsonl")
    return files


def _fill(args: list[str], env: dict[str, str]) -> list[str]:
    return [env.get(a, a) if not a.startswith("@") else str(Path(env["DIR"]) / a[1:]) for a in args]


MT = ["--model", "M", "--tokenizer", "T"]
BOX = ["--box", "0,0,8,8"]

#: command -> [(arguments, words the one line must contain)]
CASES: dict[str, list[tuple[list[str], str]]] = {
    "sample": [
        (["--model", "TM"], "text-to-image model: use arpg t2i"),
        (["--prompts", "PROMPTS"], "needs a text-to-image model"),
        (["--prompts", "BADPROMPTS", "--model", "TM"], "badprompts.jsonl:1 is not JSON"),
        (["--prompts", "EMPTYPROMPT", "--model", "TM"], "needs a non-empty \"prompt\""),
        (["--prompts", "MISSING", "--model", "TM"], "cannot read the prompt file"),
        (["--prompts", "PROMPTS", "--model", "TM", "--labels", "1"], "--prompts and --labels do not combine"),
        (["--prompts", "PROMPTS", "--model", "TM"], "does not name its prompt encoder"),
        (["--int8", "--dtype", "bf16"], "--int8 computes in float32"),
        (["--compile", "--int8"], "--compile does not take --int8"),
        (["--compile", "bogus"], "invalid choice"),
        (["--pack-weights", "--compile", "frozen"], "--pack-weights does not take --compile frozen"),
        (["--pack-weights", "--int8"], "--pack-weights does not take --int8"),
        (["--pack-weights", "--dtype", "fp16"], "float32 or bfloat16, not float16"),
        (["--dtype", "bf16", "--steps", "1000"], "steps must be an integer in 1..16"),
        (["--dtype", "fp16", "--labels", "99"], "labels must be in 0..9"),
        (["--dtype", "bf16", "--pack-weights", "--int8"], "--int8 computes in float32"),
        (["--device", "bogus"], "unknown device"),
        (["--device", "cuda:0"], "CUDA is not available"),
        (["--cfg-scale", "nan"], "finite number"),
        (["--cfg-scale", "inf"], "finite number"),
        (["--temperature", "inf"], "finite number"),
        (["--temperature", "0"], "must be > 0"),
        (["--temperature", "-1"], "must be > 0"),
        (["--steps", "0"], "must be >= 1"),
        (["--steps", "-3"], "must be >= 1"),
        (["--steps", "abc"], "expected an integer"),
        (["--steps", "1000"], "steps must be an integer in 1..16"),
        (["--num", "0"], "must be >= 1"),
        (["--num", "-3"], "must be >= 1"),
        (["--batch-size", "-1"], "must be >= 1"),
        (["--batch-size", "0"], "must be >= 1"),
        (["--top-k", "0"], "must be >= 1"),
        (["--top-p", "0"], "must be > 0"),
        (["--top-p", "1.5"], "must be <= 1"),
        (["--labels", "1,99"], "labels must be in 0..9"),
        (["--labels", "a,b"], "comma-separated integers"),
        (["--labels", ","], "--labels is empty"),
        (["--seed", "-1"], "must be >= 0"),
        (["--seed", str(2**70)], "must be <="),
        (["--order", "bogus"], "invalid choice"),
        (["--attention", "bogus"], "invalid choice"),
        (["--cfg-schedule", "bogus"], "invalid choice"),
        (["--step-schedule", "bogus"], "step_schedule must be one of"),
        (["--step-schedule", "32,32", "--steps", "4"], "contradicts the explicit step_schedule"),
        (["--step-schedule", "1,2"], "must sum to the 16 cells"),
        (["--step-schedule", "4,x"], "comma-separated integers"),
        (["--dtype", "fp8"], "unknown dtype"),
        (["--guidance-interval", "0.8,0.2"], "need 0 <= LO < HI <= 1"),
        (["--guidance-interval", "x"], "expected two numbers LO,HI"),
        (["--refine-rounds", "-1"], "must be >= 0"),
        (["--refine-fraction", "1"], "must be < 1.0"),
        (["--temperature-schedule", "bogus"], "invalid choice"),
        (["--token-draw", "bogus"], "invalid choice"),
        (["--temperature-schedule", "anneal"], "temperature_end must be a finite number > 0"),
        (["--order", "halton", "--steps", "0"], "must be >= 1"),
        (["--out", "FILE"], "is a file, not a folder"),
        (["--out", "UNDERFILE"], "is a file, not a folder"),
        (["--out", "UNWRITABLE"], "cannot write into"),
        (["--out", "FOREIGN"], "is not empty and holds no sample.json"),
        (["--num", "5000000", "--batch-size", "5000000"], "use a batch size of at most"),
        (["--model", "MISSING"], "checkpoint not found"),
        (["--model", "CORRUPT"], "corrupt, truncated or not a torch file"),
        (["--model", "EVIL"], "unsafe to load"),
        (["--model", "EVILRAW"], "unsafe to load"),
        (["--model", "DIR"], "is a folder, not a checkpoint file"),
        (["--tokenizer", "M"], "is an ARPG transformer checkpoint"),
        (["--model", "T"], "is a VQ tokenizer checkpoint, not an ARPG model"),
    ],
    "inpaint": [
        (["IMG", "--label", "1", "--device", "bogus", *BOX], "unknown device"),
        (["IMG", "--label", "1", "--cfg-scale", "nan", *BOX], "finite number"),
        (["IMG", "--label", "1", "--steps", "0", *BOX], "must be >= 1"),
        (["IMG", "--label", "1", "--steps", "-3", *BOX], "must be >= 1"),
        (["IMG", "--label", "1", "--num", "0", *BOX], "must be >= 1"),
        (["IMG", "--label", "1", "--temperature", "inf", *BOX], "finite number"),
        (["IMG", "--label", "-1", *BOX], "label must be in 0..9"),
        (["IMG", "--label", "99", *BOX], "label must be in 0..9"),
        (["IMG", "--label", "x", *BOX], "invalid int value"),
        (["MISSING", "--label", "1", *BOX], "file not found"),
        (["DIR", "--label", "1", *BOX], "is a folder, not a file"),
        (["NOTIMG", "--label", "1", *BOX], "cannot read image"),
        (["IMG30", "--label", "1", *BOX], "image size 30x30 is not a multiple"),
        (["IMG", "--label", "1"], "exactly one of --mask"),
        (["IMG", "--label", "1", "--mask", "MASK", *BOX], "exactly one of --mask"),
        (["IMG", "--label", "1", "--mask", "MASK8"], "the mask is 8x8 pixels but the image is 16x16"),
        (["IMG", "--label", "1", "--mask", "MISSING"], "file not found"),
        (["IMG", "--label", "1", "--mask", "MASKALL"], "covers the whole image"),
        (["IMG", "--label", "1", "--mask", "MASKNONE"], "the mask is empty"),
        (["IMG", "--label", "1", "--box", "0,0,4"], "4 numbers"),
        (["IMG", "--label", "1", "--box", "0,0,99,99"], "outside the image of 16x16 pixels"),
        (["IMG", "--label", "1", "--box", "0,0,99,99", "--dtype", "bf16"], "outside the image of 16x16 pixels"),
        (["IMG", "--label", "12", "--dtype", "fp16", *BOX], "label must be in 0..9"),
        (["IMG", "--label", "1", "--box", "a,b,c,d"], "x0,y0,x1,y1"),
        (["IMG", "--label", "1", *BOX, "--out", "@x.txt"], "has extension '.txt'"),
        (["IMG", "--label", "1", *BOX, "--out", "@noext"], "has no extension"),
        (["IMG", "--label", "1", *BOX, "--out", "DIR"], "is a folder; give a file name"),
        (["IMG", "--label", "1", *BOX, "--out", "@afile/x.png"], "is a file, not a folder"),
        (["IMG", "--label", "1", *BOX, "--out", "/proc/arpg-no/x.png"], "cannot write into"),
        (["IMG", "--label", "1", *BOX, "--model", "EVIL"], "unsafe to load"),
    ],
    "edit": [
        (["IMG", "--label", "12", *BOX], "label must be in 0..9"),
        (["IMG", "--label", "1", "--steps", "0", *BOX], "must be >= 1"),
        (["IMG", "--label", "1", "--cfg-scale", "nan", *BOX], "finite number"),
        (["IMG", "--label", "1", "--device", "bogus", *BOX], "unknown device"),
        (["IMG", "--label", "1", *BOX, "--out", "@e.gif2"], "has extension"),
        (["IMG30", "--label", "1", *BOX], "image size 30x30"),
    ],
    "outpaint": [
        (["IMG", "--label", "1", "--canvas", "8x8"], "canvas 8x8 is smaller than the source image 16x16"),
        (["IMG", "--label", "1", "--canvas", "16x16"], "nothing to outpaint"),
        (["IMG", "--label", "1", "--canvas", "abc"], "HEIGHTxWIDTH"),
        (["IMG", "--label", "1", "--canvas", "0x32"], "both must be >= 1"),
        (["IMG", "--label", "1", "--canvas", "18x32"], "canvas size 18x32 (height x width) is not a multiple"),
        (["IMG", "--label", "1", "--canvas", "16x100000"], "pass --force"),
        (["IMG", "--label", "1", "--canvas", "16x32", "--stride", "-1"], "must be >= 1"),
        (["IMG", "--label", "1", "--canvas", "16x32", "--stride", "0"], "must be >= 1"),
        (["IMG", "--label", "1", "--canvas", "16x32", "--stride", "99"], "stride must be an integer in 1..4"),
        (["IMG", "--label", "1", "--canvas", "16x32", "--offset", "2,2"], "on the 4-pixel token grid"),
        (["IMG", "--label", "1", "--canvas", "16x32", "--offset=-4,0"], "both must be >= 0"),
        (["IMG", "--label", "1", "--canvas", "16x32", "--steps", "0"], "must be >= 1"),
        (["IMG", "--label", "1", "--canvas", "16x32", "--cfg-scale", "nan"], "finite number"),
        (["IMG", "--label", "1", "--canvas", "16x32", "--out", "@o.txt"], "has extension"),
        (["IMG", "--label", "1", "--canvas", "16x32", "--device", "bogus"], "unknown device"),
        (["IMG", "--label", "10", "--canvas", "16x32"], "label must be in 0..9"),
    ],
    "expand": [
        (["IMG", "--label", "1", "--factor", "1"], "must be >= 2"),
        (["IMG", "--label", "1", "--factor", "-1"], "must be >= 2"),
        (["IMG", "--label", "1", "--factor", "100"], "pass --force"),
        (["IMG", "--label", "1", "--stride", "-1"], "must be >= 1"),
        (["IMG", "--label", "1", "--steps", "0"], "must be >= 1"),
        (["IMG", "--label", "1", "--cfg-scale", "nan"], "finite number"),
        (["IMG", "--label", "1", "--device", "bogus"], "unknown device"),
        (["IMG30", "--label", "1"], "image size 30x30"),
        (["IMG", "--label", "1", "--method", "bogus"], "invalid choice"),
        (["IMG", "--label", "1", "--refine-fraction", "0"], "must be > 0.0"),
    ],
    "demo": [
        (["--samples-per-class", "0"], "must be >= 1"),
        (["--samples-per-class", "-2"], "must be >= 1"),
        (["--steps", "0"], "must be >= 1"),
        (["--install"], "--install copies the weights that --retrain makes"),
        (["--out", "FILE"], "is a file, not a folder"),
        (["--seed", "-5"], "must be >= 0"),
    ],
    "train-vq": [
        (["--out", "@vq1", "--ckpt-every", "0"], "must be >= 1"),
        (["--out", "@vq1", "--lr", "nan"], "finite number"),
        (["--out", "@vq1", "--lr", "-1"], "must be > 0"),
        (["--out", "@vq1", "--lr", "0"], "must be > 0"),
        (["--out", "@vq1", "--steps", "0"], "must be >= 1"),
        (["--out", "@vq1", "--batch-size", "0"], "must be >= 1"),
        (["--out", "@vq1", "--keep", "-1"], "must be >= 0"),
        (["--out", "@vq1", "--image-size", "0"], "must be >= 1"),
        (["--out", "@vq1", "--codebook-size", "1"], "must be >= 2"),
        (["--out", "@vq1", "--device", "bogus"], "unknown device"),
        (["--out", "@vq1", "--data", "MISSING"], "not found"),
        (["--out", "@vq1", "--resume", "CORRUPT"], "corrupt, truncated or not a torch file"),
        (["--out", "@vq1", "--resume", "EVIL"], "unsafe to load"),
        (["--out", "@vq1", "--resume", "MISSING"], "not found"),
        (["--out", "FILE"], "is a file, not a folder"),
    ],
    "train": [
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-tiny-T2I", "--steps", "1"], "codes hold no prompt features"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--device", "bogus"],
         "unknown device"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--lr", "nan"], "finite number"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--condition", "canny"],
         "the codes hold no condition maps"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--lr", "-1"], "must be > 0"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--lr", "0"], "must be > 0"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--lr", "1e-4", "--min-lr",
          "1e-3"], "--min-lr 0.001 is above --lr 0.0001"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--ema", "-1"], "must be >= 0"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--ema", "1"], "must be < 1"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--keep", "-1"], "must be >= 0"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--sample-every", "-1"],
         "must be >= 0"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "0"], "must be >= 1"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--loss-chunk", "-1"],
         "must be >= 0"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--epochs", "0"], "must be > 0"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--batch-size", "0"],
         "must be >= 1"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--warmup", "-1"],
         "must be >= 0"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--betas", "0.9", "1.5"],
         "must be < 1"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--set", "dim=abc"],
         "dim must be an integer (got 'abc')"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--set", "bogus=1"],
         "unknown ARPGConfig field(s) bogus"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--set", "dim"],
         "--set expects FIELD=VALUE"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--config", "MISSING"],
         "file not found"),
        (["--codes", "CODES", "--out", "@r1", "--steps", "1"], "choose the model size with --preset"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-bogus", "--steps", "1"], "unknown preset"),
        (["--out", "@r1", "--preset", "ARPG-nano", "--steps", "1"], "--codes is required"),
        (["--codes", "MISSING", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1"], "not found"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--init", "MISSING"],
         "file not found"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--init", "EVIL"],
         "unsafe to load"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--resume", "CORRUPT"],
         "corrupt, truncated or not a torch file"),
        (["--codes", "CODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1", "--resume", "EVIL"],
         "unsafe to load"),
        (["--codes", "BADLABELS", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1"],
         "labels-00000.npy of"),
        (["--codes", "BADCODES", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1"],
         "holds code 40, outside the model's vocabulary 0..15"),
        (["--codes", "EVILSHARD", "--out", "@r1", "--preset", "ARPG-nano", "--steps", "1"], "unsafe to load"),
        (["--codes", "CODES", "--out", "FILE", "--preset", "ARPG-nano", "--steps", "1"], "is a file, not a folder"),
        (["--codes", "CODES", "--out", "@r2", "--preset", "ARPG-nano", "--steps", "1", "--dtype", "bf16",
          "--batch-size", "3", "--grad-accum", "2"], "must be a multiple of world size"),
        (["--codes", "CODES", "--out", "@r2", "--preset", "ARPG-nano", "--steps", "1", "--dtype", "bf16",
          "--init", "EVIL"], "unsafe to load"),
        (["--codes", "CODES", "--out", "@r2", "--preset", "ARPG-nano", "--steps", "1", "--dtype", "fp16"],
         "invalid choice"),
    ],
    "extract-codes": [
        (["--data", "FOREIGN", "--tokenizer", "T", "--out", "@x1", "--captions"],
         "neither a folder with metadata.jsonl nor WebDataset .tar shards"),
        (["--data", "animal-mnist", "--tokenizer", "T", "--out", "@x1", "--workers", "-1"], "must be >= 0"),
        (["--data", "animal-mnist", "--tokenizer", "T", "--out", "@x1", "--condition", "depth"], "invalid choice"),
        (["--data", "animal-mnist", "--tokenizer", "T", "--out", "@x1", "--batch-size", "0"], "must be >= 1"),
        (["--data", "animal-mnist", "--tokenizer", "T", "--out", "@x1", "--shard-size", "0"], "must be >= 1"),
        (["--data", "animal-mnist", "--tokenizer", "T", "--out", "@x1", "--image-size", "0"], "must be >= 1"),
        (["--data", "animal-mnist", "--tokenizer", "T", "--out", "@x1", "--device", "bogus"], "unknown device"),
        (["--data", "animal-mnist", "--tokenizer", "MISSING", "--out", "@x1"], "not found"),
        (["--data", "animal-mnist", "--tokenizer", "EVIL", "--out", "@x1"], "unsafe to load"),
        (["--data", "animal-mnist", "--tokenizer", "CORRUPT", "--out", "@x1"], "corrupt, truncated"),
        (["--data", "MISSING", "--tokenizer", "T", "--out", "@x1"], "not found"),
        (["--data", "animal-mnist", "--tokenizer", "T", "--out", "FILE"], "is a file, not a folder"),
        (["--data", "animal-mnist", "--tokenizer", "T", "--out", "@x1", "--split", "bogus"], "invalid choice"),
    ],
    "sample-fid": [
        (["--out", "@f1", "--num-samples", "-1"], "must be >= 1"),
        (["--out", "@f1", "--num-samples", "0"], "must be >= 1"),
        (["--out", "@f1", "--batch-size", "0"], "must be >= 1"),
        (["--out", "@f1", "--steps", "0"], "must be >= 1"),
        (["--out", "@f1", "--steps", "999"], "steps must be an integer in 1..16"),
        (["--out", "@f1", "--cfg-scale", "nan"], "finite number"),
        (["--out", "@f1", "--temperature", "inf"], "finite number"),
        (["--out", "@f1", "--per-class", "0"], "must be >= 1"),
        (["--out", "@f1", "--recipe", "bogus"], "invalid choice"),
        (["--out", "@f1", "--device", "bogus"], "unknown device"),
        (["--out", "@f1", "--dtype", "fp8"], "unknown dtype"),
        (["--out", "@f1", "--dtype", "bf16", "--steps", "999"], "steps must be an integer in 1..16"),
        (["--out", "FILE"], "is a file, not a folder"),
        (["--out", "@f1", "--model", "EVIL"], "unsafe to load"),
    ],
    "eval": [
        (["MISSING", "--ref", "NPZ"], "not found"),
        (["NPZ", "--ref", "MISSING"], "not found"),
        (["BADNPZ", "--ref", "NPZ"], "corrupt or another format"),
        (["EVILNPZ", "--ref", "NPZ"], "unsafe to load"),
        (["NPZ", "--ref", "BADNPZ"], "corrupt or not an .npz file"),
        (["NPZ", "--ref", "EVILNPZ"], "unsafe to load"),
        (["NPZ", "--ref", "NPZ", "--batch-size", "0"], "must be >= 1"),
        (["NPZ", "--ref", "NPZ", "--k", "0"], "must be >= 1"),
        (["NPZ", "--ref", "NPZ", "--splits", "0"], "must be >= 1"),
        (["NPZ", "--ref", "NPZ", "--out", "DIR"], "is a folder"),
        (["NPZ", "--ref", "NPZ", "--out", "@r.txt"], "has extension"),
        (["NPZ", "--ref", "NPZ", "--inception", "MISSING"], "file not found"),
        (["NPZ", "--ref", "NPZ", "--inception", "EVIL"], "unsafe to load"),
        (["NPZ", "--ref", "NPZ", "--device", "bogus"], "unknown device"),
        (["NPZ", "--ref", "NPZ", "--recipe", "bogus"], "invalid choice"),
    ],
    "convert": [
        (["M", "FILE"], "is a file, not a folder"),
        (["M", "@out.pt"], "writes .safetensors files (no pickles) or a folder"),
        (["VQ-17", "@o.safetensors"], "nor a published name"),
        (["MISSING", "@o.safetensors"], "file not found"),
        (["EVIL", "@o.safetensors"], "unsafe to load"),
        (["CORRUPT", "@o.safetensors"], "corrupt, truncated"),
        (["M", "@o.safetensors", "--preset", "bogus"], "invalid choice"),
        (["M", "/proc/arpg-cannot-write.safetensors"], "cannot write into"),
    ],
    "app": [
        (["--port", "0"], "--port"),
        (["--port", "http"], "--port"),
        (["--max-queue", "0"], "--max-queue"),
        (["--model", "M"], "give both --model and --tokenizer"),
        (["--model", "MISSING", "--tokenizer", "T"], "file not found"),
        (["--model", "EVIL", "--tokenizer", "T"], "unsafe to load"),
        (["--class-names", "MISSING"], "not found"),
        (["--model", "M", "--tokenizer", "T", "--class-names", "FILE"], "names; the model has"),
    ],
    "control": [
        (["--label", "1"], "give IMAGE (to make the condition from) or --condition"),
        (["IMG"], "the following arguments are required: --label"),
        (["IMG", "--label", "1", "--model", "M"], "has no condition encoder"),
        (["IMG", "--label", "1", "--kind", "layout"], "trained on 'canny' maps, not 'layout'"),
        (["IMG", "--label", "1", "--kind", "depth"], "invalid choice"),
        (["--condition", "MISSING", "--label", "1"], "file not found"),
        (["--condition", "DIR", "--label", "1"], "is a folder"),
        (["--condition", "NOTIMG", "--label", "1"], "cannot read condition map"),
        (["--condition", "WIDE", "--label", "1"], "must be square"),
        (["IMG", "--condition", "CMAP", "--kind", "canny", "--label", "1"], "drop one"),
        (["--condition", "CMAP", "--label", "1", "--box", "0,0,8,8"], "give IMAGE"),
        (["IMG", "--condition", "CMAP", "--label", "1"], "IMAGE would be unused"),
        (["IMG30", "--label", "1"], "the model works on 16x16"),
        (["IMG", "--label", "99"], "label must be in 0..9"),
        (["IMG", "--label", "1", "--steps", "0"], "must be >= 1"),
        (["IMG", "--label", "1", "--num", "0"], "must be >= 1"),
        (["IMG", "--label", "1", "--condition-guidance", "bogus"], "invalid choice"),
        (["IMG", "--label", "1", "--mask", "MASKNONE"], "the mask is empty"),
        (["IMG", "--label", "1", "--mask", "MASK", "--box", "0,0,8,8"], "not both"),
        (["IMG", "--label", "1", "--box", "0,0,99,99"], "outside the image"),
        (["IMG", "--label", "1", "--out", "@x.txt"], "has extension '.txt'"),
        (["IMG", "--label", "1", "--model", "EVIL"], "unsafe to load"),
        (["IMG", "--label", "1", "--int8", "--dtype", "bf16"], "--int8 computes in float32"),
    ],
    "info": [
        (["MISSING"], "file not found"),
        (["DIR"], "is a folder"),
        (["CORRUPT"], "corrupt, truncated"),
        (["EVIL"], "unsafe to load"),
        (["EVILRAW"], "unsafe to load"),
    ],
    "recipes": [
        (["bogus"], "invalid choice"),
    ],
    "t2i": [
        (["", "--model", "TM", "--tokenizer", "T"], "the prompt is empty"),
        (["a cat", "--model", "M", "--tokenizer", "T"], "class-conditional model: use arpg sample --labels"),
        (["a cat", "--model", "TM", "--tokenizer", "T"], "does not name its prompt encoder"),
        (["a cat", "--model", "TM", "--tokenizer", "T", "--text-encoder", "MISSING"], "cannot load the text encoder"),
        (["a cat", "--model", "TM", "--tokenizer", "T", "--num", "0"], "must be >= 1"),
        (["a cat", "--model", "MISSING", "--tokenizer", "T"], "not found"),
        (["a cat", "--tokenizer", "T"], "give both --model and --tokenizer"),
        (["a cat", "--model", "TM"], "give both --model and --tokenizer"),
    ],
    "bench": [
        (["--skip-run", "--dir", "DIR"], "no benchmark scripts in"),
        (["--device", "bogus"], "unknown device"),
    ],
}

# Commands that load the model pair get the tiny weights unless the case names its own.
_NEEDS_PAIR = {"sample", "inpaint", "edit", "outpaint", "expand", "sample-fid"}


def _argv(command: str, args: list[str], env: dict[str, str]) -> list[str]:
    extra = []
    if command == "control":
        extra += [] if "--model" in args else ["--model", "CM"]
        extra += [] if "--tokenizer" in args else ["--tokenizer", "T"]
        extra += ["--out", "@c_" + str(abs(hash(tuple(args)))) + ".png"] if "--out" not in args else []
    if command in _NEEDS_PAIR:
        if "--model" not in args:
            extra += ["--model", "M"]
        if "--tokenizer" not in args:
            extra += ["--tokenizer", "T"]
    if command in {"sample", "sample-fid", "inpaint", "edit", "outpaint", "expand", "train-vq", "train",
                   "extract-codes", "control", "t2i"} and "--device" not in args:
        extra += ["--device", "cpu"]
    if command == "sample" and "--out" not in args:
        extra += ["--out", "@s_" + str(abs(hash(tuple(args))))]
    if command in {"inpaint", "edit", "outpaint", "expand"} and "--out" not in args:
        extra += ["--out", "@e_" + str(abs(hash(tuple(args)))) + ".png"]
    if command == "t2i" and "--out" not in args:
        extra += ["--out", "@t_" + str(abs(hash(tuple(args))))]
    if command == "demo" and "--out" not in args:
        extra += ["--out", "@demo"]
    return [command, *_fill(args + extra, env)]


def _case_ids():
    return [(c, a, w) for c, cases in CASES.items() for a, w in cases]


#: The CPU-feature probe forced each way, so every machine runs the table as both kinds of CPU would: one with
#: no native bf16 / fp16 matmul (low-precision requests warn before running) and one with everything native.
PROBES = {"no-native": lambda dtype: dtype == torch.float32, "native": lambda dtype: True}


@pytest.mark.parametrize("probe", list(PROBES))
@pytest.mark.parametrize("command,args,words", _case_ids(),
                         ids=[f"{c}:{' '.join(a)[:60]}" for c, a, _ in _case_ids()])
def test_bad_input_is_one_line(env, capsys, monkeypatch, command, args, words, probe):
    """A refusal is one line whatever the CPU: every check runs before any warning about a run going ahead."""
    from arpg.util import devices

    monkeypatch.setattr(devices, "cpu_has_native", PROBES[probe])
    rc = main(_argv(command, args, env))
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == 2, f"exit {rc}; stderr: {captured.err[-500:]}"
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {captured.err[-800:]}"
    assert "Traceback" not in captured.err and "internal error" not in captured.err
    assert lines[0].startswith(f"arpg {command}: error: ")
    assert words in lines[0], lines[0]
    assert not Path(env["PWNED"]).exists(), "an unsafe pickle ran code"


def test_case_counts_cover_every_command():
    """Every command that takes input has its table (the count per command is reported by the note)."""
    from arpg.cli import build_parser

    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001 - argparse has no public listing
    assert commands == set(CASES), commands ^ set(CASES)
    assert all(len(v) >= 1 for v in CASES.values())


@pytest.mark.parametrize("argv", [["sample", "--device", "bogus"], ["train", "--out", "/tmp/x", "--lr", "nan"],
                                  ["info", "/nonexistent.pt"]])
def test_console_script_prints_one_line(argv):
    r = subprocess.run([sys.executable, "-m", "arpg.cli", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
