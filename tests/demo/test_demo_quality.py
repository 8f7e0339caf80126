"""The demo quality measurement runs end to end on the shipped weights (tiny sizes)."""

import math

import numpy as np
import torch

from arpg import load_model
from arpg.demo.assets import demo_paths
from arpg.demo.classifier import load_classifier
from arpg.demo.quality import CLASSIFIER, editing_figures, generation_table, reconstruction_ceiling
from arpg.vq import load_tokenizer


def _assets():
    paths = demo_paths()
    return load_model(paths.model), load_tokenizer(paths.tokenizer), load_classifier(CLASSIFIER)


def test_generation_table_and_ceiling_report_bounded_figures():
    model, tok, clf = _assets()
    torch.set_grad_enabled(False)
    try:
        rows = generation_table(model, tok, clf, [dict(steps=4, cfg_scale=2.0)], per_class=2, log=lambda s: None)
        ceiling = reconstruction_ceiling(tok, clf)
    finally:
        torch.set_grad_enabled(True)
    (row,) = rows
    assert 0.0 <= row["accuracy"] <= 1.0 and row["frechet"] >= 0 and row["img_per_s"] > 0
    # equal counts per class, so the overall accuracy is the mean of the per-class ones
    assert len(row["per_class_accuracy"]) == 10
    assert abs(sum(row["per_class_accuracy"]) / 10 - row["accuracy"]) < 1e-2
    conf = np.array(row["confusion"])
    assert conf.shape == (10, 10) and (conf.sum(1) == 2).all()  # per_class=2 samples asked of each class
    assert np.allclose(np.diag(conf) / 2, row["per_class_accuracy"])
    # reconstructions of real images must classify far above chance (10 classes)
    assert ceiling["accuracy"] > 0.5 and ceiling["frechet"] >= 0


def test_editing_figures_cover_all_three_measurements():
    model, tok, clf = _assets()
    torch.set_grad_enabled(False)
    try:
        fig = editing_figures(model, tok, clf, dict(steps=4, cfg_scale=2.0), n=4)
    finally:
        torch.set_grad_enabled(True)
    assert fig["n_images"] == 4
    for key in ("accuracy_originals", "accuracy_inpainted_centre", "accuracy_inpainted_centre_decode_all",
                "class_edit_success"):
        assert 0.0 <= fig[key] <= 1.0
    for key in ("outpaint_seam_mad", "outpaint_inside_mad", "outpaint_matched_seam_mad", "outpaint_matched_inside_mad"):
        assert math.isfinite(fig[key]) and fig[key] >= 0
    assert set(fig["seconds_per_edit"]) == {"inpaint", "edit", "outpaint"}
