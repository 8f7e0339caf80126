"""Training: one infrastructure for both trainers, and the trainers on top.

* :mod:`.config` -- :class:`~arpg.train.config.TrainConfig` (``arpg train``), its checks, resume settings
* :mod:`.trainer` -- :func:`~arpg.train.trainer.train`, the ARPG trainer (one process, DDP or FSDP)
* :mod:`.stream` -- which sample, crop, order and class dropout each training slot gets
* :mod:`.optim` -- AdamW groups, the warm-up + cosine lr schedule (both trainers), EMA
* :mod:`.checkpointing` -- one checkpoint format and naming scheme for both trainers: atomic, keep-last-K,
  RNG states, resume checks
* :mod:`.metrics` -- JSON-lines and TensorBoard logs (both trainers)
* :mod:`.export` -- full state dicts under FSDP, plain models, the final weights
* :mod:`.preview` -- preview sample grids during training
* :mod:`.vq_config`, :mod:`.vq_trainer` -- the VQ tokenizer's settings and trainer

Submodules are imported on use, so ``import arpg.train`` stays cheap.
"""
