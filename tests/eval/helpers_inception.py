"""A tiny stand-in for the FID Inception network (random weights), for tests only: the evaluation pipeline
runs end to end without the real weights; its numbers mean nothing."""

from __future__ import annotations

import torch
import torch.nn as nn

from arpg.eval.inception import NetworkExtractor


class TinyStandIn(nn.Module):
    """Random-weight tiny CNN with the same interface as :class:`FIDInceptionV3`, for tests and demos.

    Its numbers mean nothing; it exists so that the evaluation pipeline runs without the real weights.
    """

    def __init__(self, feature_dim: int = 64, num_classes: int = 10, seed: int = 0):
        super().__init__()
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 16, 5, stride=4, padding=2), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(32, feature_dim, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(feature_dim, num_classes, bias=False)
        torch.random.set_rng_state(gen_state)  # building a stand-in must not disturb the caller's RNG

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool = self.body(x).mean(dim=(2, 3))
        return pool, self.fc(pool)


def stand_in_extractor(feature_dim: int = 64, num_classes: int = 10, seed: int = 0, input_size: int = 64,
                       device: str | torch.device = "cpu", batch_size: int = 64) -> NetworkExtractor:
    """A :class:`~arpg.eval.inception.NetworkExtractor` around :class:`TinyStandIn` (fast on a CPU)."""
    return NetworkExtractor(TinyStandIn(feature_dim, num_classes, seed), "stand-in (random tiny CNN)", device,
                            batch_size, input_size=input_size)
