import argparse

import numpy as np
import pytest
import torch

import arpg
from arpg.errors import ARPGError, CheckpointError
from arpg.vq import (VQConfig, VQTokenizer, from_uint8, get_vq_preset, infer_vq_config, load_tokenizer,
                            save_tokenizer, to_uint8, vq_preset_names)
from arpg.vq.perceptual import load_perceptual, perceptual_from_state_dict



def _images(b, c, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Smooth-ish random images in [-1, 1] (upsampled noise), never constant.
    x = torch.rand(b, c, max(1, h // 4), max(1, w // 4), generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).clamp(-1, 1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return VQTokenizer.from_preset("VQ-tiny").eval()


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


# --- presets and the published layout --------------------------------------------------------------
@pytest.mark.parametrize("name", vq_preset_names())
def test_encode_decode_shapes_every_preset(name):
    torch.manual_seed(1)
    tok = VQTokenizer.from_preset(name).eval()
    f = tok.downsample
    h, w = 2 * f, 3 * f  # smallest non-square input keeps VQ-16 fast
    x = _images(2, 3, h, w)
    codes = tok.encode(x)
    assert codes.shape == (2, 6) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < tok.config.codebook_size
    y = tok.decode(codes, grid=(2, 3))
    assert y.shape == (2, 3, h, w) and y.dtype == torch.float32
    assert y.min() >= -1 and y.max() <= 1
    assert torch.equal(tok.decode(codes.view(2, 2, 3)), y)


def test_downsampling_factors():
    assert {n: get_vq_preset(n).downsample for n in vq_preset_names()} == {
        "VQ-16": 16, "VQ-small": 8, "VQ-demo": 4, "VQ-scenes": 8, "VQ-tiny": 4}
    assert VQTokenizer.from_preset("VQ-demo").grid_shape(64, 64) == (16, 16)
    assert VQTokenizer.from_preset("VQ-demo").grid_shape(28, 32) == (7, 8)


def test_vq16_matches_llamagen_layout():
    with torch.device("meta"):
        tok = VQTokenizer.from_preset("VQ-16")
    sd = tok.state_dict()
    assert sum(p.numel() for p in tok.parameters()) == 71_883_403
    assert len(sd) == 344
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    expected = {
        "quantize.codebook_used": (65536,),
        "quantize.embedding.weight": (16384, 8),
        "quant_conv.weight": (8, 256, 1, 1), "quant_conv.bias": (8,),
        "post_quant_conv.weight": (256, 8, 1, 1),
        "encoder.conv_in.weight": (128, 3, 3, 3),
        "encoder.conv_blocks.0.downsample.conv.weight": (128, 128, 3, 3),
        "encoder.conv_blocks.2.res.0.nin_shortcut.weight": (256, 128, 1, 1),
        "encoder.conv_blocks.4.res.1.conv2.weight": (512, 512, 3, 3),
        "encoder.conv_blocks.4.attn.1.proj_out.weight": (512, 512, 1, 1),
        "encoder.mid.1.q.weight": (512, 512, 1, 1),
        "encoder.mid.2.norm2.weight": (512,),
        "encoder.conv_out.weight": (256, 512, 3, 3),
        "decoder.conv_in.weight": (512, 256, 3, 3),
        "decoder.conv_blocks.0.res.2.conv1.weight": (512, 512, 3, 3),
        "decoder.conv_blocks.0.attn.2.k.weight": (512, 512, 1, 1),
        "decoder.conv_blocks.0.upsample.conv.weight": (512, 512, 3, 3),
        "decoder.conv_blocks.1.res.0.nin_shortcut.weight": (256, 512, 1, 1),
        "decoder.conv_blocks.3.upsample.conv.weight": (128, 128, 3, 3),
        "decoder.conv_out.weight": (3, 128, 3, 3),
    }
    for k, shape in expected.items():
        assert shapes.get(k) == shape, k
    absent = ["encoder.conv_blocks.4.downsample.conv.weight", "decoder.conv_blocks.4.upsample.conv.weight",
              "encoder.conv_blocks.3.attn.0.q.weight", "decoder.conv_blocks.1.attn.0.q.weight",
              "encoder.conv_blocks.0.res.0.nin_shortcut.weight", "encoder.conv_blocks.0.res.2.conv1.weight"]
    assert not [k for k in absent if k in shapes]
    assert infer_vq_config(sd) == tok.config
    norms = [m for m in tok.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert {(m.num_groups, m.eps) for m in norms} == {(32, 1e-6)}


@pytest.mark.parametrize("name", vq_preset_names())
def test_architecture_inferred_from_shapes(name):
    with torch.device("meta"):
        tok = VQTokenizer.from_preset(name)
    assert infer_vq_config(tok.state_dict()) == tok.config


def test_config_validation_and_overrides():
    tok = VQTokenizer.from_preset("VQ-tiny", in_channels=1, codebook_size=32, codebook_dim=3)
    assert tok.quantize.embedding.weight.shape == (32, 3) and tok.encoder.conv_in.in_channels == 1
    with pytest.raises(ARPGError, match="in_channels"):
        get_vq_preset("VQ-tiny", in_channels=2)
    with pytest.raises(ARPGError, match="unknown tokenizer preset"):
        get_vq_preset("VQ-17")
    with pytest.raises(ARPGError, match="norm_groups"):
        VQConfig(ch=12, ch_mult=(1, 2), norm_groups=8)
    assert VQConfig.from_dict(get_vq_preset("VQ-demo").to_dict()) == get_vq_preset("VQ-demo")


# --- quantisation properties -------------------------------------------------------------------------
def test_codes_are_brute_force_nearest_neighbours(tiny):
    x = _images(3, 3, 32, 24, seed=3)
    z = tiny.encode_latent(x).detach().double()  # [B, D, h, w], unit vectors
    assert torch.allclose(z.norm(dim=1), torch.ones(()).double(), atol=1e-5)
    book = torch.nn.functional.normalize(tiny.quantize.embedding.weight.detach().double(), dim=-1)
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    dist = ((flat[:, None, :] - book[None, :, :]) ** 2).sum(-1)  # explicit, no expansion tricks
    best = dist.argmin(1)
    codes = tiny.encode(x).flatten()
    chosen = dist.gather(1, codes[:, None]).squeeze(1)
    assert torch.all(chosen <= dist.min(1).values + 1e-6)  # never worse than the true nearest
    top2 = dist.topk(2, dim=1, largest=False).values
    clear = (top2[:, 1] - top2[:, 0]) > 1e-5
    assert clear.float().mean() > 0.9 and torch.equal(codes[clear], best[clear])


def test_raster_order(tiny):
    x = _images(2, 3, 16, 32, seed=4)
    grid = tiny.quantize.nearest(tiny.encode_latent(x))  # [B, h, w]
    codes = tiny.encode(x)
    h, w = grid.shape[1:]
    for t in (0, 5, w, h * w - 1):
        assert torch.equal(codes[:, t], grid[:, t // w, t % w])


def test_decode_codes_equals_decoding_quantised_latent(tiny):
    x = _images(2, 3, 32, 32, seed=5)
    with torch.no_grad():
        z_q, codes = tiny.quantize_latent(tiny.encode_latent(x))
        ref = tiny.decode_latent(z_q).clamp(-1, 1)
        # The quantised latent is the normalised codebook row of each code.
        rows = torch.nn.functional.normalize(tiny.quantize.embedding.weight, dim=-1)[codes].permute(0, 3, 1, 2)
    assert torch.allclose(z_q, rows)
    assert torch.allclose(tiny.decode(tiny.encode(x)), ref, atol=1e-5)
    assert torch.equal(codes.flatten(1), tiny.encode(x))


def test_batched_calls_match_whole_batch(tiny):
    x = _images(5, 3, 16, 16, seed=6)
    codes = tiny.encode(x)
    assert torch.equal(tiny.encode(x, batch_size=2), codes)
    assert torch.allclose(tiny.decode(codes, batch_size=2), tiny.decode(codes), atol=1e-5)


def test_training_forward_straight_through(tiny):
    tok = VQTokenizer.from_preset("VQ-tiny").train()
    x = _images(2, 3, 16, 16, seed=7)
    out = tok(x)
    assert out.recon.shape == x.shape and out.codes.shape == (2, 4, 4)
    (out.recon.pow(2).mean() + out.codebook_loss + out.commit_loss).backward()
    assert tok.encoder.conv_in.weight.grad.abs().sum() > 0  # gradients pass the quantiser
    assert tok.quantize.embedding.weight.grad.abs().sum() > 0


# --- pixels -------------------------------------------------------------------------------------------
def test_uint8_round_trip_and_formula():
    rng = np.random.default_rng(0)
    u = rng.integers(0, 256, size=(3, 8, 12, 3), dtype=np.uint8)
    x = from_uint8(u)
    assert x.shape == (3, 3, 8, 12) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    assert np.array_equal(to_uint8(x), u)
    y = torch.rand(2, 3, 4, 4) * 2.4 - 1.2
    expected = torch.clamp(127.5 * y + 128, 0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(to_uint8(y), expected)


def test_from_uint8_pil_and_channels():
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(2)]
    x = from_uint8(rgb)
    assert x.shape == (2, 3, 8, 8)
    assert np.array_equal(to_uint8(x), np.stack([np.asarray(im) for im in rgb]))
    gray = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)  # [B, H, W] batch of grayscale images
    g1 = from_uint8(gray)
    assert g1.shape == (4, 1, 28, 28)
    g3 = from_uint8(gray, channels=3)
    assert g3.shape == (4, 3, 28, 28) and torch.equal(g3[:, 0], g3[:, 2])
    assert from_uint8(rgb, channels=1).shape == (2, 1, 8, 8)
    assert from_uint8(Image.fromarray(gray[0])).shape == (1, 1, 28, 28)


# --- bad input gets one line ----------------------------------------------------------------------------
def test_bad_images(tiny):
    x = _images(1, 3, 16, 16)
    with pytest.raises(ARPGError) as e:
        tiny.encode(_images(1, 1, 16, 16))
    assert "3-channel" in _one_line(e)
    with pytest.raises(ARPGError) as e:
        tiny.encode(x.permute(0, 2, 3, 1))
    assert "channels-last" in _one_line(e)
    with pytest.raises(ARPGError) as e:
        tiny.encode(_images(1, 3, 18, 16))
    assert "not a multiple" in _one_line(e) and "4" in str(e.value)
    with pytest.raises(ARPGError) as e:
        tiny.encode(torch.from_numpy(to_uint8(x)).permute(0, 3, 1, 2))
    assert "uint8" in _one_line(e) and "from_uint8" in str(e.value)
    with pytest.raises(ARPGError) as e:
        tiny.encode(x * 127.5 + 127.5)  # 0..255 floats
    assert "[-1, 1]" in _one_line(e)
    with pytest.raises(ARPGError) as e:
        tiny.encode(to_uint8(x))
    assert "ndarray" in _one_line(e)
    with pytest.raises(ARPGError) as e:
        from_uint8(x.permute(0, 2, 3, 1).numpy())
    assert "expects uint8" in _one_line(e)
    with pytest.raises(ARPGError) as e:
        to_uint8(torch.from_numpy(to_uint8(x)))
    assert "float images" in _one_line(e)


def test_bad_codes(tiny):
    codes = tiny.encode(_images(2, 3, 16, 16))
    with pytest.raises(ARPGError) as e:
        tiny.decode(codes.float())
    assert "integer codes" in _one_line(e)
    with pytest.raises(ARPGError) as e:
        tiny.decode(codes + tiny.config.codebook_size)
    assert "0..63" in _one_line(e)
    with pytest.raises(ARPGError) as e:
        tiny.decode(codes[:, :15])
    assert "grid=" in _one_line(e)
    with pytest.raises(ARPGError) as e:
        tiny.decode(codes, grid=(2, 4))
    assert "grid" in _one_line(e)


# --- files -----------------------------------------------------------------------------------------------
def test_safetensors_round_trip(tmp_path, tiny):
    path = tmp_path / "tok.safetensors"
    save_tokenizer(tiny, path)
    loaded = load_tokenizer(path)
    assert loaded.config == tiny.config and not loaded.training
    x = _images(2, 3, 16, 16, seed=8)
    assert torch.equal(loaded.encode(x), tiny.encode(x))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert VQConfig.from_dict(__import__("json").loads(f.metadata()["vq_config"])) == tiny.config


def test_llamagen_layout_loads_strictly(tmp_path):
    # vq_ds16_c2i.pt keeps weights under "model"; training files also carry argparse args.
    torch.manual_seed(2)
    tok = VQTokenizer.from_preset("VQ-tiny", in_channels=1)
    path = tmp_path / "vq.pt"
    torch.save({"model": tok.state_dict(), "args": argparse.Namespace(lr=1e-4), "steps": 3}, path)
    loaded = load_tokenizer(path)
    assert loaded.config == tok.config
    x = _images(1, 1, 16, 16)
    assert torch.equal(loaded.encode(x), tok.eval().encode(x))
    # A preset that does not fit names the mismatch in one line.
    with pytest.raises(CheckpointError) as e:
        load_tokenizer(path, preset="VQ-demo")
    assert "does not fit" in _one_line(e)


def test_corrupt_and_foreign_checkpoints(tmp_path):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError) as e:
        load_tokenizer(bad)
    assert "corrupt, truncated or not a torch file" in _one_line(e)
    good = tmp_path / "good.safetensors"
    save_tokenizer(VQTokenizer.from_preset("VQ-tiny"), good)
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError) as e:
        load_tokenizer(trunc)
    _one_line(e)
    arpg_file = tmp_path / "arpg.pt"
    torch.save({"model": arpg.ARPG.from_preset("ARPG-nano").state_dict()}, arpg_file)
    with pytest.raises(CheckpointError) as e:
        load_tokenizer(arpg_file)
    assert "ARPG transformer" in _one_line(e)
    with pytest.raises(CheckpointError) as e:
        load_tokenizer(tmp_path / "missing.pt")
    _one_line(e)


def test_exported_from_package():
    assert arpg.VQTokenizer is VQTokenizer and arpg.VQConfig is VQConfig and arpg.load_tokenizer is load_tokenizer


@pytest.mark.slow
def test_vq16_file_round_trip(tmp_path):
    """A full-size random VQ-16 saved like vq_ds16_c2i.pt loads strictly with the inferred config."""
    tok = VQTokenizer.from_preset("VQ-16")
    path = tmp_path / "vq_ds16_c2i.pt"
    torch.save({"model": tok.state_dict()}, path)
    loaded = load_tokenizer(path)
    assert loaded.config == get_vq_preset("VQ-16")
    x = _images(1, 3, 32, 32)
    assert torch.equal(loaded.encode(x), tok.eval().encode(x))


# --- perceptual loss (a small random stand-in for VGG/LPIPS weights) --------------------------------------
def _stand_in(tmp_path, with_lins=True):
    g = torch.Generator().manual_seed(0)
    sd = {}
    for idx, (cin, cout) in {0: (3, 4), 2: (4, 4), 5: (4, 8), 7: (8, 8), 10: (8, 8)}.items():
        sd[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.3
        sd[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.1
    if with_lins:
        for k, c in enumerate((4, 8, 8)):
            sd[f"lin{k}.model.1.weight"] = torch.rand(1, c, 1, 1, generator=g)
    path = tmp_path / "standin.pt"
    torch.save(sd, path)
    return path


def test_perceptual_standin(tmp_path):
    net = load_perceptual(_stand_in(tmp_path))
    assert net.taps == [1, 3, 4] and net.pool_after == [False, True, False, True, False]
    x, y = _images(2, 3, 16, 16, seed=1), _images(2, 3, 16, 16, seed=2)
    assert torch.allclose(net(x, x), torch.zeros(2), atol=1e-7)
    assert (net(x, y) > 0).all()
    x.requires_grad_(True)
    net(x, y).sum().backward()
    assert x.grad.abs().sum() > 0 and not any(p.requires_grad for p in net.parameters())
    assert net(x[:, :1].detach(), y[:, :1]).shape == (2,)  # gray is replicated for an RGB net
    plain = load_perceptual(_stand_in(tmp_path, with_lins=False))
    assert (plain(x.detach(), y) > 0).all()


def test_perceptual_vgg16_layout_and_bad_heads():
    # torchvision's VGG16 feature indices -> LPIPS taps relu1_2 .. relu5_3.
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    sd, i, cin = {}, 0, 3
    for v in cfg:
        if v == "M":
            i += 1
            continue
        sd[f"features.{i}.weight"], sd[f"features.{i}.bias"] = torch.empty(v, cin, 3, 3), torch.empty(v)
        cin, i = v, i + 2
    net = perceptual_from_state_dict(sd)
    assert [net.convs[t].out_channels for t in net.taps] == [64, 128, 256, 512, 512]
    bad = dict(sd, **{"lin0.model.1.weight": torch.ones(1, 3, 1, 1)})
    with pytest.raises(CheckpointError) as e:
        perceptual_from_state_dict(bad)
    _one_line(e)
    with pytest.raises(CheckpointError) as e:
        perceptual_from_state_dict({"x.weight": torch.ones(1)})
    assert "no VGG-style" in _one_line(e)
