"""A small word-level prompt encoder trained from scratch, behind the same interface as T5.

No pretrained encoder can be fetched everywhere, and a caption set with a closed vocabulary (the embedded
demo's grammar, a lab's attribute captions) does not need one. :class:`WordTextEncoder` splits a prompt into
lower-case words, looks each up in its vocabulary (unknown words share one ``<unk>`` slot, with a warning),
adds learned positions and runs a few pre-norm transformer layers; like :class:`~arpg.text.T5TextEncoder` it
returns ``[B, length, dim]`` features with the real tokens last and their mask.

How it is trained (:func:`train_word_encoder`): from captions and, for each caption, a few categorical facts
about what it says (for the demo grammar: its form, relation, and each animal's class and colour); heads on the
mean of the token features learn to read those facts back. Supervising meaning rather than masked words is the
choice here because in a grammar every colour word appears in exactly the same contexts: a masked-word model
would have no reason to tell "red" from "blue", while an image model conditioned on the features must.

A saved encoder is a folder: ``config.json`` (``"kind": "arpg-word-encoder"``, sizes, the vocabulary),
``model.safetensors`` and a ``README.md``; :func:`arpg.text.load_text_encoder` recognises it, so swapping in
T5 is a different ``--text-encoder``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ARPGError
from . import TextEncoder, check_prompts, left_pad

KIND = "arpg-word-encoder"
PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+")


def words_of(prompt: str) -> list[str]:
    """Lower-case words (letters and digits); punctuation separates words and is dropped."""
    return _WORD.findall(prompt.lower())


class WordEncoderNet(nn.Module):
    """Word embeddings + learned positions -> ``n_layer`` pre-norm transformer layers -> LayerNorm."""

    def __init__(self, vocab_size: int, dim: int = 64, n_layer: int = 2, n_head: int = 4, length: int = 16):
        super().__init__()
        self.words = nn.Embedding(vocab_size, dim)
        self.positions = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, n_head, dim_feedforward=4 * dim, dropout=0.0, batch_first=True,
                                       norm_first=True) for _ in range(n_layer))
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``ids`` [B, l] (real words first), ``mask`` [B, l] -> features [B, l, dim]."""
        x = self.words(ids) + self.positions[: ids.shape[1]]
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=~mask)
        return self.norm(x)


class WordTextEncoder(TextEncoder):
    """The trained network and its vocabulary, answering :class:`~arpg.text.TextEncoder`'s ``encode``."""

    def __init__(self, net: WordEncoderNet, vocab: Sequence[str], length: int, device: str | torch.device = "cpu"):
        if list(vocab[:2]) != [PAD, UNK]:
            raise ARPGError(f"a word vocabulary starts with {PAD!r}, {UNK!r}")
        if length < 1:
            raise ARPGError(f"a prompt needs at least one slot (length {length})")
        self.net = net.eval().to(device)
        # A model may ask for more slots than the encoder has positions (the 120 of T5 by default): prompts keep
        # at most ``positions`` words, left-padded to ``length`` slots.
        self.words_kept = min(int(length), int(net.positions.shape[0]))
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.dim = net.words.embedding_dim
        self.length = int(length)
        self.device = torch.device(device)

    def ids(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Word ids [B, words_kept] (real words first, cut to ``words_kept``) and their mask; warns about
        unknown words and cut prompts."""
        rows, unknown, cut, keep = [], set(), 0, self.words_kept
        for p in prompts:
            words = words_of(p)
            unknown.update(w for w in words if w not in self.index)
            cut += len(words) > keep
            rows.append([self.index.get(w, 1) for w in words[:keep]])
        if unknown:
            warnings.warn(f"words the prompt encoder never saw (read as {UNK}): {', '.join(sorted(unknown))}",
                          stacklevel=3)
        if cut:
            warnings.warn(f"{cut} of {len(prompts)} prompts are longer than {keep} words: only their first "
                          f"{keep} words condition the image", stacklevel=3)
        ids = torch.zeros(len(rows), keep, dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        return ids.to(self.device), (ids != 0).to(self.device)

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = check_prompts(prompts)
        ids, mask = self.ids(prompts)
        if not bool(mask.any(dim=1).all()):
            bad = int((~mask.any(dim=1)).nonzero()[0])
            raise ARPGError(f"prompt {bad} has no words (letters or digits): describe the image to generate")
        return left_pad(self.net(ids, mask).float(), mask, self.length)

    def save(self, folder: str | os.PathLike, card: str = "") -> Path:
        """Write the encoder as a folder :func:`load_word_encoder` (and ``load_text_encoder``) reads."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        net = self.net
        config = {"kind": KIND, "dim": self.dim, "n_layer": len(net.layers), "n_head": net.layers[0].self_attn.num_heads,
                  "length": int(net.positions.shape[0]), "vocab": self.vocab}
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        (folder / "README.md").write_text(card or "# Word-level prompt encoder\n\nTrained from scratch by "
                                          "`arpg.text.words.train_word_encoder`.\n")
        return folder


def is_word_encoder(path: str | os.PathLike) -> bool:
    p = Path(path) / "config.json"
    try:
        config = json.loads(p.read_text()) if p.is_file() else None
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("kind") == KIND


def load_word_encoder(folder: str | os.PathLike, length: int | None = None,
                      device: str | torch.device = "cpu") -> WordTextEncoder:
    """A saved :class:`WordTextEncoder`; ``length`` slots per prompt (default: as trained)."""
    from ..util.checkpoints import read_checkpoint
    from ..util.state import load_state_strict

    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ARPGError(f"cannot read the word encoder's config in {folder}: {type(e).__name__}") from None
    try:
        net = WordEncoderNet(len(config["vocab"]), config["dim"], config["n_layer"], config["n_head"],
                             config["length"])
    except (KeyError, TypeError) as e:
        raise ARPGError(f"the word encoder's config in {folder} is incomplete ({type(e).__name__}: {e})") from None
    state, _ = read_checkpoint(folder / "model.safetensors")
    load_state_strict(net, state, folder / "model.safetensors")
    return WordTextEncoder(net, config["vocab"], length or config["length"], device)


def build_vocab(captions: Sequence[str]) -> list[str]:
    """``<pad>``, ``<unk>``, then every word of ``captions`` in sorted order."""
    return [PAD, UNK] + sorted({w for c in captions for w in words_of(c)})


def train_word_encoder(captions: Sequence[str], facts: Mapping[str, Sequence[int]], *, dim: int = 64,
                       n_layer: int = 2, n_head: int = 4, length: int = 16, steps: int = 1500, batch_size: int = 128,
                       lr: float = 2e-3, seed: int = 0, progress: bool = True) -> tuple[WordTextEncoder, dict]:
    """Train a :class:`WordTextEncoder` on ``captions``: for each name in ``facts`` (one class id >= 0 per
    caption), a linear head on the mean of the real tokens' features learns to predict it.

    Returns the encoder and a record (losses, per-fact training accuracy over all captions)."""
    if not captions:
        raise ARPGError("no captions to train the word encoder on")
    if not facts:
        raise ARPGError("no facts to train the word encoder on: give at least one class id per caption")
    if steps < 1:
        raise ARPGError(f"steps must be >= 1 (got {steps})")
    empty = [i for i, c in enumerate(captions) if not words_of(c)]
    if empty:
        raise ARPGError(f"caption {empty[0]} has no words (letters or digits)")
    for name, values in facts.items():
        if len(values) != len(captions):
            raise ARPGError(f"fact {name!r} has {len(values)} values for {len(captions)} captions")
    torch.manual_seed(seed)
    vocab = build_vocab(captions)
    net = WordEncoderNet(len(vocab), dim, n_layer, n_head, length)
    encoder = WordTextEncoder(net, vocab, length)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cut captions are reported by the caller's data, not per batch
        ids, mask = encoder.ids(list(captions))
    targets = {k: torch.as_tensor(list(v), dtype=torch.long) for k, v in facts.items()}
    heads = nn.ModuleDict({k: nn.Linear(dim, int(v.max()) + 1) for k, v in targets.items()})
    params = list(net.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    net.train()

    def pooled(i: torch.Tensor) -> torch.Tensor:
        m = mask[i].unsqueeze(-1).float()
        return (net(ids[i], mask[i]) * m).sum(1) / m.sum(1)

    losses = []
    for _ in tqdm(range(steps), desc="word encoder", disable=not progress):
        i = torch.randint(len(captions), (batch_size,), generator=gen)
        z = pooled(i)
        loss = sum(F.cross_entropy(heads[k](z), t[i]) for k, t in targets.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    net.eval()
    with torch.no_grad():
        z = torch.cat([pooled(torch.arange(s, min(s + 1024, len(captions)))) for s in range(0, len(captions), 1024)])
        accuracy = {k: float((heads[k](z).argmax(1) == t).float().mean()) for k, t in targets.items()}
    record = {"steps": steps, "first_loss": losses[0], "final_loss": sum(losses[-50:]) / len(losses[-50:]),
              "train_accuracy": accuracy, "vocab_size": len(vocab), "dim": dim, "n_layer": n_layer, "length": length}
    return encoder, record
