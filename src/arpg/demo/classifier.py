"""A small CNN classifier for the bundled data set, used to measure generation and editing quality.

Trained on the Animal-MNIST train split (padded to 32x32), it gives (i) class accuracy of generated or
edited images and (ii) 128-d penultimate features for a Frechet distance in its feature space (the
small-scale stand-in for FID, since the Inception network knows nothing about silhouettes).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..util.state import load_state_strict
from ..util.checkpoints import read_checkpoint
from ..data.animal_mnist import load_split, padded
from ..util.files import atomic_write


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, feat_dim: int = 128):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, feat_dim), nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.fc = nn.Linear(feat_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))


def _to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float [N, C, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def train_classifier(images: np.ndarray, labels: np.ndarray, *, epochs: int = 6, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0, progress: bool = True) -> SmallCNN:
    """Train on uint8 images [N, H, W, C] with random shifts of up to 2 pixels as augmentation."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SmallCNN(in_channels=images.shape[-1], num_classes=int(labels.max()) + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(images) / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    x_all, y_all = _to_input(images), torch.from_numpy(labels).long()
    model.train()
    bar = tqdm(total=steps, desc="classifier", disable=not progress)
    for _ in range(epochs):
        perm = rng.permutation(len(images))
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            x = x_all[idx]
            dx, dy = rng.integers(-2, 3, size=2)
            x = torch.roll(x, shifts=(int(dy), int(dx)), dims=(2, 3))
            loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


@torch.no_grad()
def predict(model: SmallCNN, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels [N], features float64 [N, D]) for uint8 images [N, H, W, C]."""
    model.eval()
    preds, feats = [], []
    for i in range(0, len(images), batch_size):
        x = _to_input(images[i:i + batch_size])
        f = model.features(x)
        preds.append(model.fc(f).argmax(1).numpy())
        feats.append(f.double().numpy())
    return np.concatenate(preds), np.concatenate(feats)


def save_classifier(model: SmallCNN, path: str | Path) -> None:
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(sd, tmp))


def load_classifier(path: str | Path, in_channels: int = 1, num_classes: int = 10) -> SmallCNN:

    sd, _ = read_checkpoint(path)
    model = SmallCNN(in_channels, num_classes)
    load_state_strict(model, sd, path)
    return model.eval()


def main() -> None:  # pragma: no cover - convenience: python -m arpg.demo.classifier OUT.safetensors
    import sys


    t = time.perf_counter()
    x, y = load_split("train")
    model = train_classifier(padded(x), y)
    xh, yh = load_split("heldout")
    acc = float((predict(model, padded(xh))[0] == yh).mean())
    save_classifier(model, sys.argv[1])
    print(f"held-out accuracy {acc:.4f}; {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":  # pragma: no cover
    main()
