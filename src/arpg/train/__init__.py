"""Training: the ARPG trainer and its pieces.

* :mod:`.trainer` -- :func:`~arpg.train.trainer.train` / :class:`~arpg.train.trainer.TrainConfig` (``arpg train``)
* :mod:`.stream` -- which sample, crop, order and class dropout each training slot gets
* :mod:`.optim` -- AdamW groups, warm-up + cosine schedule, EMA
* :mod:`.checkpointing` -- atomic checkpoints, keep-last-K, RNG states, resume checks
* :mod:`.distributed` -- torchrun process groups, DDP / FSDP wrapping
* :mod:`.metrics` -- JSON-lines and TensorBoard logs
* :mod:`.vq_trainer` -- the VQ tokenizer's trainer

Submodules are imported on use, so ``import arpg.train`` stays cheap.
"""
