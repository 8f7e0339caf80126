"""Evaluation: FID, Inception Score, precision/recall, the FID Inception network, sample files."""

from .fid import FeatureStats, feature_stats, frechet_distance
from .inception import FeatureExtractor, load_inception
from .inception_net import FIDInceptionV3
from .inception_score import inception_score
from .npz import load_reference, open_images, write_npz
from .prdc import precision_recall

__all__ = [
    "FIDInceptionV3", "FeatureExtractor", "FeatureStats", "feature_stats", "frechet_distance",
    "inception_score", "load_inception", "load_reference", "open_images", "precision_recall",
    "write_npz",
]
