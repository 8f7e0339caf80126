"""The two-pass ARPG transformer.

Pass 1 ("self" / content decoder): ``n_layer/2`` pre-norm Llama blocks over ``[class, x_t1, x_t2, ...]``
(tokens in generation order, each with 2D RoPE at its own cell), then one RMSNorm and ONE shared key and
value projection. Pass 2 ("cross" / guided decoder): ``n_layer/2`` blocks over queries that all start as
the [MASK] embedding; each block's query projection is rotated to the *target* cell, attends to the shared
K/V, then runs its FFN. Output: RMSNorm and a linear head.

Module names and shapes follow the published checkpoints exactly, so their state dicts
load with ``strict=True``.

Training uses :meth:`ARPG.forward` (teacher forcing, causal in both passes; the head and the loss a chunk of
rows at a time, :mod:`.loss`, and blocks that keep fewer activations, :mod:`.lean_training`). Decoding uses
two steps, the same eager and compiled: :meth:`ARPG.pass1` (new tokens through Pass 1, their keys/values
written into a preallocated :class:`KVCache` at tensor positions) and :meth:`ARPG.pass2` (Pass 2 for a set of
target cells). :meth:`ARPG.extend` / :meth:`ARPG.query` call them with the cache's own length for eager use.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.utils.checkpoint

from ..errors import ARPGError
from ..util.pretrained import PretrainedMixin
from .blocks import RMSNorm, TwoPassLayers
from .cache import KVCache
from .config import ARPGConfig, get_preset
from .control import build_encoder, check_condition, condition_queries
from .lean_training import lean_applies, norm_linears
from .loss import DEFAULT_CHUNK_ROWS, head_cross_entropy
from .rope import apply_rope, build_rope_table, position_index
from .text import CaptionProjector, check_text, key_mask, prefix_masks

ATTENTION_MODES = ("block", "causal")


class ARPG(nn.Module, PretrainedMixin):
    """ARPG transformer. Build with ``ARPG(config)`` or ``ARPG.from_preset("ARPG-L", **overrides)``; save and
    load folders / Hub repositories with :meth:`save_pretrained`, :meth:`from_pretrained`, :meth:`push_to_hub`."""

    model_type = "arpg"
    config_class = ARPGConfig
    metadata_key = "arpg_config"
    # The Hub has no class-conditional pipeline; class labels are the only input, as for DiT.
    pipeline_tag = "unconditional-image-generation"

    def __init__(self, config: ARPGConfig):
        super().__init__()
        self.config = cfg = config
        self.embeddings = nn.Embedding(cfg.n_embeddings, cfg.dim)
        self.embed_dropout = nn.Dropout(cfg.embed_dropout)
        self.layers = TwoPassLayers(cfg)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.controlled:  # ControlARPG only: published configs have no such module (their keys are unchanged)
            self.condition_encoder = build_encoder(cfg.condition_encoder, cfg.condition_channels, cfg.dim,
                                                   cfg.condition_stride, cfg.condition_width, cfg.condition_mode)
        if cfg.texted:  # text-to-image only (arpg.model.text)
            self.caption = CaptionProjector(cfg.text_dim, cfg.dim, cfg.text_len)
        # Not stored in checkpoints: recomputed from the config.
        self.register_buffer("rope", self.rope_table(), persistent=False)
        # Recommended sampling settings stored with the weights, if any: an arpg.sampling.SamplingConfig or
        # its dict (as read from a file). arpg.generate fills every argument the caller leaves unset from it
        # (else from the pinned recipe of the architecture).
        self.sampling: Any = None
        # Text models: the prompt encoder their features came from (a Hub name or folder), stored with the weights.
        self.text_encoder: str | None = None
        self.reset_parameters()

    @classmethod
    def empty(cls, config: ARPGConfig, device: str | torch.device = "cpu") -> "ARPG":
        model = super().empty(config, device)
        model.rope.copy_(model.rope_table())  # not stored: recomputed from the config
        return model

    def card_facts(self) -> dict[str, Any]:
        c = self.config
        control = (f"; ControlARPG: {c.condition_kind or 'condition'} maps {c.condition_channels}x{c.condition_side}x"
                   f"{c.condition_side} through a {c.condition_encoder} encoder, features {c.condition_mode} the "
                   "Pass-2 query inputs") if c.controlled else ""
        return {"architecture": f"ARPG two-pass transformer (arXiv 2503.10568): {c.n_layer // 2} self + "
                                f"{c.n_layer // 2} cross layers, dim {c.dim}, {c.n_head} heads, FFN {c.ffn_hidden}, "
                                f"vocabulary {c.vocab_size}, {c.num_classes} classes, {c.grid_size}x{c.grid_size} "
                                f"grid, class_rope={c.class_rope}, class_queries={c.class_queries}{control}",
                **({"text": f"text-to-image: {c.text_len} prompt features of width {c.text_dim} through a caption "
                            "projector as the Pass-1 prefix (arpg.model.text)"} if c.texted else {}),
                "parameters": f"{count_parameters(self):,}", "config": c.to_dict()}

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ARPG":
        """Build a randomly initialised model from a named preset (see :data:`arpg.model.config.ARPG_PRESETS`)."""
        return cls(get_preset(name, **overrides))

    def reset_parameters(self) -> None:
        """Published init: N(0, 0.02) for linears and embeddings, norms at 1, the output head zeroed."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
        nn.init.zeros_(self.head.weight)
        if self.config.controlled:
            self.condition_encoder.reset_parameters()
        if self.config.texted:
            self.caption.reset_parameters()
        if self.rope.device.type != "meta":
            self.rope.copy_(self.rope_table())

    # ---------------------------------------------------------------------------------------------
    # Helpers
    # ---------------------------------------------------------------------------------------------
    def rope_table(self) -> torch.Tensor:
        """The RoPE table this config needs (a fresh CPU tensor; the ``rope`` buffer holds a copy)."""
        c = self.config
        return build_rope_table(c.grid_size, c.head_dim, c.rope_base, c.class_rope)

    def class_ids(self, labels: torch.Tensor) -> torch.Tensor:
        """Embedding rows for class labels; ``-1`` (or ``num_classes``) selects the null class."""
        labels = torch.where(labels < 0, torch.full_like(labels, self.config.num_classes), labels)
        return labels + self.config.class_offset

    def check_labels(self, labels: torch.Tensor, allow_null: bool = False) -> None:
        if self.config.texted:
            raise ARPGError("this is a text-to-image model: give prompts (or prompt features), not class labels")
        n = self.config.num_classes
        lo = -1 if allow_null else 0
        if labels.numel() and (int(labels.min()) < lo or int(labels.max()) > n - 1 + int(allow_null)):
            raise ARPGError(f"labels must be in 0..{n - 1} (got values in {int(labels.min())}..{int(labels.max())})")

    def _shared_kv(self, h: torch.Tensor, rope: torch.Tensor, lean: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The shared keys (rotated) and values [B, H, T, D] of the Pass-1 output ``h``; ``lean``: teacher-forced,
        through the lean autograd function where it applies (the norm output is not kept for backward)."""
        B, T, _ = h.shape
        cfg = self.config
        L = self.layers
        if lean and lean_applies(h, L.to_k, L.to_v):
            k, v = (t.view(B, T, cfg.n_head, cfg.head_dim) for t in norm_linears(h, L.norm, (L.to_k, L.to_v)))
        else:
            h = L.norm(h)
            k, v = (lin(h).view(B, T, cfg.n_head, cfg.head_dim) for lin in (L.to_k, L.to_v))
        return apply_rope(k, rope).transpose(1, 2), v.transpose(1, 2)

    def prompt_prefix(self, text: torch.Tensor, text_mask: torch.Tensor | None = None,
                      drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Text models: prompt features [B, text_len, text_dim] (and their mask [B, text_len], True = a real
        token) -> the Pass-1 prefix [B, text_len, dim] and its mask; rows where ``drop`` [B] is True get the null
        caption. One-line errors for a class model or features that do not fit."""
        cfg = self.config
        if not cfg.texted:
            raise ARPGError("this is a class-conditional model (text_dim is 0): it takes class labels, not prompts")
        text, text_mask = check_text(text, text_mask, None, cfg.text_len, cfg.text_dim)
        return self.caption(text, text_mask, drop)

    def query_inputs(self, cls_ids: torch.Tensor, T: int, cells: torch.Tensor | None = None,
                     condition: torch.Tensor | None = None, active: torch.Tensor | None = None) -> torch.Tensor:
        """Pass-2 inputs [B, T, d]: the [MASK] embedding, plus the class embedding of each row's
        ``cls_ids`` [B] (class or null rows) when the config has ``class_queries``; with ``condition``
        features [B, n, d] (:meth:`encode_condition`), each target cell of ``cells`` [B, T] also gets its own
        feature (rows where ``active`` [B] is False keep the plain inputs)."""
        mask_row = self.embeddings.weight[self.config.mask_id]
        x = mask_row.expand(cls_ids.shape[0], T, -1)
        if self.config.class_queries:
            x = x + self.embeddings(cls_ids)[:, None]
        if condition is not None:
            x = condition_queries(x, mask_row, condition, cells, self.config.condition_mode, active)
        return x

    def encode_condition(self, condition: torch.Tensor) -> torch.Tensor:
        """Condition maps [B, C, S, S] (floats in [0, 1]; S = ``config.condition_side``) -> one feature per
        cell [B, n, d] in raster order. One-line errors for a model without a condition encoder or a wrong
        shape."""
        cfg = self.config
        if not cfg.controlled:
            raise ARPGError("this model has no condition encoder (condition_channels is 0): it cannot take a "
                            "condition; fine-tune one with arpg train --condition KIND --init WEIGHTS")
        condition = check_condition(condition, None, cfg.condition_channels, cfg.condition_side)
        p = self.condition_encoder.out.weight
        return self.condition_encoder(condition.to(device=p.device, dtype=p.dtype))

    def _logits(self, h: torch.Tensor, guidance: tuple[int, torch.Tensor | float] | None = None) -> torch.Tensor:
        """float32 logits of the final hidden states ``h``. With ``guidance`` ``(half, weight)``: rows
        ``[:half]`` conditional, ``[half:]`` unconditional, and the guided logits
        ``uncond + weight * (cond - uncond)`` [half, ...] come out. The head is linear without a bias, so
        guiding its input is guiding its logits: one head matmul per pair of rows instead of two (the head
        is the widest matmul of a step). The mix is formed in float32 and cast to the head's dtype."""
        h = self.norm(h)
        if guidance is not None:
            half, weight = guidance
            cond, uncond = h[:half].float(), h[half:].float()
            h = (uncond + weight * (cond - uncond)).to(h.dtype)
        return self.head(h).float()

    # ---------------------------------------------------------------------------------------------
    # Training: teacher-forced forward
    # ---------------------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None, orders: torch.Tensor | None = None, *,
                drop_labels: torch.Tensor | None = None, return_loss: bool = False,
                condition: torch.Tensor | None = None, drop_condition: torch.Tensor | None = None,
                text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                drop_text: torch.Tensor | None = None,
                loss_chunk: int | None = DEFAULT_CHUNK_ROWS, grad_checkpoint: bool = False) -> torch.Tensor:
        """Teacher-forced logits (or the training loss).

        Args:
            tokens: LongTensor [B, n] of codes in raster order (n = grid cells).
            labels: LongTensor [B] in ``0..num_classes-1`` (``-1`` = null class, for unconditional use).
            orders: LongTensor [B, n], one permutation of the cells per sample; drawn fresh when None.
            drop_labels: BoolTensor [B], labels to replace by the null class (class dropout for guidance
                training). None: in training mode each label drops with probability ``class_dropout``
                (in eval mode none does). The trainer passes its own, reproducible choice.
            return_loss: return the mean cross-entropy over every cell instead of the logits.
            condition: ControlARPG models only: condition maps [B, C, S, S] (see :meth:`encode_condition`);
                None = no condition (every query is the plain one, as for a dropped condition).
            drop_condition: BoolTensor [B], conditions to drop (None: in training mode each drops with
                probability ``condition_dropout``). A dropped class keeps its condition (the paper's guidance).
            text: text models only (then ``labels`` is None): prompt features [B, text_len, text_dim].
            text_mask: BoolTensor [B, text_len], True where a prompt has a real token (None: all).
            drop_text: BoolTensor [B], captions to replace by the learned null caption (None: in training mode each
                drops with probability ``caption_dropout``).
            loss_chunk: with ``return_loss``: the head and the cross-entropy run this many rows at a time, so
                the full float32 logits and their gradient never exist (:func:`arpg.loss.head_cross_entropy`;
                the same loss and gradients); 0 or None: the plain formula.
            grad_checkpoint: recompute each block's activations in backward instead of keeping them (less
                memory, about one more forward of the blocks in time); only while gradients are enabled.
        Returns:
            float32 logits [B, n, vocab] where ``logits[:, i]`` predicts cell ``orders[:, i]`` having seen
            the class and the tokens at ``orders[:, :i]`` (causal in both passes in train and eval mode);
            or, with ``return_loss``, the scalar loss.
        """
        cfg = self.config
        B, n = tokens.shape
        if n != cfg.n_cells:
            raise ARPGError(f"tokens must have {cfg.n_cells} cells per sample (grid {cfg.grid_size}x{cfg.grid_size}), got {n}")
        if orders is None:
            orders = random_orders(B, n, device=tokens.device)
        ordered = tokens.gather(1, orders)
        mask_1 = mask_2 = None
        if cfg.texted:
            if labels is not None:
                raise ARPGError("this is a text-to-image model: pass labels=None and the prompt features as text=")
            if text is None:
                raise ARPGError("a text-to-image model needs prompt features (text=[B, text_len, text_dim])")
            if drop_text is None and self.training and cfg.caption_dropout > 0:
                drop_text = torch.rand(B, device=tokens.device) < cfg.caption_dropout
            prefix, valid = self.prompt_prefix(text, text_mask, drop_text)
            cls_ids = torch.full((B,), cfg.null_class_id, dtype=torch.long, device=tokens.device)  # (unused)
            start = prefix.to(self.embeddings.weight.dtype)
            mask_1, mask_2 = prefix_masks(valid, cfg.text_len, n)
        else:
            cls_ids = self.class_ids(labels)
            if drop_labels is None and self.training and cfg.class_dropout > 0:
                drop_labels = torch.rand(B, device=tokens.device) < cfg.class_dropout
            if drop_labels is not None:
                cls_ids = torch.where(drop_labels, torch.full_like(cls_ids, cfg.null_class_id), cls_ids)
            start = self.embeddings(cls_ids[:, None])
        L = cfg.prefix_len
        inp_cells = torch.cat([torch.full((B, L), -1, dtype=orders.dtype, device=orders.device), orders[:, :-1]], 1)
        rope_in = self.rope[position_index(inp_cells)]
        rope_q = self.rope[position_index(orders)]

        run = _checkpointed if grad_checkpoint else _direct
        h = self.embed_dropout(torch.cat([start, self.embeddings(ordered[:, :-1])], dim=1))
        for blk in self.layers.self_dec:
            h = run(blk, h, rope_in, mask_1)
        k, v = self._shared_kv(h, rope_in, lean=True)
        feats = active = None
        if condition is not None:
            feats = self.encode_condition(condition)
            if drop_condition is None and self.training and cfg.condition_dropout > 0:
                drop_condition = torch.rand(B, device=tokens.device) < cfg.condition_dropout
            active = None if drop_condition is None else ~drop_condition.to(tokens.device)
        x = self.embed_dropout(self.query_inputs(cls_ids, n, orders, feats, active))
        for blk in self.layers.cross_dec:
            x = run(blk, x, rope_q, k, v, mask_2 is None, mask_2)
        if not return_loss:
            return self._logits(x)
        return head_cross_entropy(self.norm(x), self.head.weight, ordered, loss_chunk)

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor, orders: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy over all cells, for a fresh random order per sample (or the given ``orders``)."""
        return self(tokens, labels, orders, return_loss=True)

    # ---------------------------------------------------------------------------------------------
    # Decoding pieces
    # ---------------------------------------------------------------------------------------------
    def new_cache(self, batch: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                  max_len: int | None = None, zeroed: bool = False) -> KVCache:
        """Allocate a cache for ``batch`` rows holding the class token (or prompt prefix) and every cell (``max_len``
        slots when given; ``zeroed`` when steps will attend to slots not written yet, masked)."""
        cfg = self.config
        p = self.embeddings.weight
        return KVCache.allocate(cfg.n_layer // 2, batch, cfg.n_head, max_len or cfg.n_cells + cfg.prefix_len, cfg.head_dim,
                                dtype or p.dtype, device or p.device, zeroed)

    def pass1(self, ids: torch.Tensor | None, cells: torch.Tensor, cache: KVCache, positions: torch.Tensor,
              window: int, mask: torch.Tensor | None = None, embedded: torch.Tensor | None = None) -> None:
        """The Pass-1 decoding step: tokens ``ids`` [B, T] (embedding rows) at grid ``cells`` [B, T] (``-1``:
        the class token) through the self blocks; every layer's keys/values and the shared ones are written at
        cache ``positions`` [T]. Attention reads the cache's first ``window`` slots, ``mask`` [T, window] saying
        which of them each new token sees (None: all). Positions are a tensor, so one compiled graph serves
        every step of its shape. ``cache.length`` is the caller's to keep. ``embedded``: the inputs [B, T, dim]
        themselves instead of ``ids`` (a text model's prompt prefix). With ``cache.key_valid`` (a prompt's
        padding) no token sees a padded prompt slot."""
        rope = self.rope[position_index(cells)]
        h = self.embeddings(ids) if embedded is None else embedded.to(self.embeddings.weight.dtype)
        if cache.key_valid is not None:
            valid = key_mask(cache.key_valid, positions, window)
            mask = valid if mask is None else valid & mask
        for i, blk in enumerate(self.layers.self_dec):
            h = blk.step(h, rope, cache.self_k[i], cache.self_v[i], positions, window, mask)
        k, v = self._shared_kv(h, rope, lean=False)
        cache.shared_k.index_copy_(2, positions, k.to(cache.shared_k.dtype))
        cache.shared_v.index_copy_(2, positions, v.to(cache.shared_v.dtype))

    def pass2(self, cells: torch.Tensor, cache: KVCache, window: int, mask: torch.Tensor | None = None,
              guidance: tuple[int, torch.Tensor | float] | None = None) -> torch.Tensor:
        """The Pass-2 decoding step: float32 logits [B, Q, vocab] for target ``cells`` [B, Q], attending to the
        cache's first ``window`` slots (``mask`` [Q, window]: which of them may be seen; None: all). With
        ``guidance`` ``(half, weight)`` (rows ``[:half]`` conditional, the rest unconditional): the guided
        logits [half, Q, vocab], through one head matmul (see :meth:`_logits`)."""
        if cache.class_ids is None:
            raise ARPGError("Pass 2 needs a KV cache that starts with the class token (run Pass 1 on it first)")
        Q = cells.shape[1]
        if cache.key_valid is not None:
            valid = key_mask(cache.key_valid, torch.full((Q,), -1, device=cells.device), window)
            mask = valid if mask is None else valid & mask
        rope = self.rope[position_index(cells)]
        k, v = cache.shared_k[:, :, :window], cache.shared_v[:, :, :window]
        x = self.query_inputs(cache.class_ids, Q, cells, cache.condition, cache.condition_active)
        for blk in self.layers.cross_dec:
            x = blk.step(x, rope, k, v, mask)
        return self._logits(x, guidance)

    def extend(self, ids: torch.Tensor, cells: torch.Tensor, cache: KVCache, attention: str = "block",
               embedded: torch.Tensor | None = None) -> None:
        """:meth:`pass1` after what ``cache`` holds (``cache.length`` advances by ``T``).

        Args:
            ids: LongTensor [B, T] of embedding rows (codes, or class rows from :meth:`class_ids`).
            cells: LongTensor [B, T] of grid cells (``-1`` for the class token).
            attention: ``"block"`` (new tokens see each other, as the published sampler) or
                ``"causal"`` (new token t sees only the earlier new tokens).
        """
        T = cells.shape[1]
        start = cache.length
        if start + T > cache.capacity:
            raise ARPGError(f"KV cache overflow: {start} + {T} > capacity {cache.capacity}")
        if attention not in ATTENTION_MODES:
            raise ARPGError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
        mask = None
        if attention == "causal" and T > 1:
            mask = torch.ones(T, start + T, dtype=torch.bool, device=cells.device).tril(diagonal=start)
        if start == 0:
            if not bool((cells[:, 0] == -1).all()):
                raise ARPGError("the first token in an empty KV cache must be the class token (cell -1)")
            cache.class_ids = ids[:, 0] if ids is not None else torch.full(  # what Pass-2 queries start from
                (cells.shape[0],), self.config.null_class_id, dtype=torch.long, device=cells.device)
        self.pass1(ids, cells, cache, torch.arange(start, start + T, device=cells.device), start + T, mask, embedded)
        cache.length = start + T

    def query(self, cells: torch.Tensor, cache: KVCache,
              guidance: tuple[int, torch.Tensor | float] | None = None) -> torch.Tensor:
        """:meth:`pass2` over everything ``cache`` holds."""
        return self.pass2(cells, cache, cache.length, None, guidance)


def _direct(block: nn.Module, *args) -> torch.Tensor:
    return block(*args)


def _checkpointed(block: nn.Module, *args) -> torch.Tensor:
    # non-reentrant: works under DDP / FSDP and replays dropout with the same random numbers
    return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)


def random_orders(batch: int, n: int, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """One uniform random permutation of ``range(n)`` per row: LongTensor [batch, n]."""
    gen_device = generator.device if generator is not None else (device or "cpu")
    keys = torch.rand(batch, n, generator=generator, device=gen_device)
    return keys.argsort(dim=1).to(device or gen_device)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
