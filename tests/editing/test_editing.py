import numpy as np
import pytest
import torch

from arpg import ARPGError
from arpg.editing import box_mask, cell_mask, fill_canvas, inpaint, load_mask, plan_windows
from arpg.editing.expand import expand_image
from arpg.editing.images import edit_image, inpaint_image, outpaint_image


@pytest.fixture
def tok(editing_tok):
    return editing_tok


@pytest.fixture
def model(editing_model):
    return editing_model


def _gen(s):
    return torch.Generator().manual_seed(s)


def _image(tok, size):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (size, size, tok.config.in_channels), dtype=np.uint8)


def test_cell_mask_any_pixel_rule():
    pix = np.zeros((8, 8), dtype=bool)
    pix[3, 5] = True  # one pixel in cell (0, 1) of a 4-pixel grid
    cells = cell_mask(pix, 4)
    assert cells.tolist() == [[False, True], [False, False]]
    assert cell_mask(box_mask(8, 8, (0, 0, 5, 4)), 4).tolist() == [[True, True], [False, False]]


def test_windows_cover_canvas():
    wins = plan_windows(10, 13, 4)
    covered = np.zeros((10, 13), dtype=int)
    for r, c in wins:
        covered[r:r + 4, c:c + 4] += 1
    assert covered.min() >= 1 and all(r + 4 <= 10 and c + 4 <= 13 for r, c in wins)
    with pytest.raises(ARPGError, match="smaller than the model"):
        plan_windows(3, 8, 4)


def test_inpaint_codes_keeps_known_and_is_reproducible(model):
    codes = torch.randint(0, model.config.vocab_size, (3, 16))
    known = torch.rand(16) > 0.4
    known[0] = True
    known[1] = False
    a = inpaint(model, codes, known, torch.tensor([1, 2, 3]), steps=4, generator=_gen(0))
    b = inpaint(model, codes, known, torch.tensor([1, 2, 3]), steps=4, generator=_gen(0))
    assert torch.equal(a[:, known], codes[:, known]) and torch.equal(a, b)


def test_fill_canvas_decodes_each_unknown_cell_once(model):
    H, W = 7, 10
    codes = torch.randint(0, model.config.vocab_size, (2, H, W))
    known = torch.zeros(H, W, dtype=torch.bool)
    known[2:5, 3:6] = True
    out, log = fill_canvas(model, codes, known, torch.tensor([0, 1]), steps=3, generator=_gen(1), return_log=True)
    decoded = torch.zeros(H, W, dtype=torch.int)
    for r, c, new in log:
        decoded[r:r + 4, c:c + 4] += new.int()
    assert torch.equal(decoded, (~known).int())  # every unknown cell exactly once, known cells never
    assert torch.equal(out[:, known], codes[:, known])
    again = fill_canvas(model, codes, known, torch.tensor([0, 1]), steps=3, generator=_gen(1))
    assert torch.equal(out, again)


def test_keep_pixels_gives_back_every_unmasked_pixel(model, tok):
    f, c = tok.downsample, tok.config.in_channels
    img = np.random.default_rng().integers(0, 256, (4 * f, 4 * f, c), dtype=np.uint8)
    pix = np.zeros((4 * f, 4 * f), dtype=bool)
    pix[f + 1:2 * f + 2, f:3 * f - 1] = True  # not on the cell grid: some cells are partly masked
    r = inpaint_image(model, tok, img, pix, 2, steps=2, generator=_gen(6))
    assert np.array_equal(r["images"][0][~pix], img[~pix])
    assert np.array_equal(r["images"][0][pix], r["decoded"][0][pix])
    raw = inpaint_image(model, tok, img, pix, 2, steps=2, generator=_gen(6), keep_pixels=False)
    assert np.array_equal(raw["images"], r["decoded"])
    assert not np.array_equal(raw["images"][0][~pix], img[~pix])  # the tokenizer is lossy
    o = outpaint_image(model, tok, img, canvas=(6 * f, 9 * f), offset=(f, 2 * f), label=1, steps=2, generator=_gen(4))
    assert np.array_equal(o["images"][0, f:5 * f, 2 * f:6 * f], img)
    outside = np.ones((6 * f, 9 * f), dtype=bool)
    outside[f:5 * f, 2 * f:6 * f] = False
    assert np.array_equal(o["images"][0][outside], o["decoded"][0][outside])


def test_image_tasks_keep_known_cells(model, tok):
    f = tok.downsample
    img = _image(tok, 4 * f)
    src = tok.encode(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1).view(4, 4)
    r = inpaint_image(model, tok, img, box=(f, f, 3 * f, 3 * f), label=2, num=2, steps=2, generator=_gen(2))
    assert r["images"].shape == (2, 4 * f, 4 * f, tok.config.in_channels)
    assert torch.equal(r["codes"][:, r["known"]], src[r["known"]].expand(2, -1))
    assert int((~r["known"]).sum()) == 4
    e = edit_image(model, tok, img, box_mask(4 * f, 4 * f, (0, 0, 2 * f, 4 * f)), new_label=5, steps=2, generator=_gen(3))
    assert torch.equal(e["codes"][0][e["known"]], src[e["known"]])
    o = outpaint_image(model, tok, img, canvas=(6 * f, 9 * f), offset=(f, 2 * f), label=1, steps=2, generator=_gen(4))
    assert o["codes"].shape == (1, 6, 9) and torch.equal(o["codes"][0, 1:5, 2:6], src)
    x = expand_image(model, tok, img, label=1, steps=2, method="windows", generator=_gen(5))
    assert x["codes"].shape == (1, 8, 8) and int(x["known"].sum()) == 16  # the stride-2 lattice
    assert int(expand_image(model, tok, img, label=1, steps=2, generator=_gen(5))["known"].sum()) == 32  # dense


@pytest.mark.parametrize("call,msg", [
    (lambda m, t, img: inpaint_image(m, t, img, np.zeros((5, 5), bool), 1), "the mask is 5x5 pixels"),
    (lambda m, t, img: inpaint_image(m, t, img, np.zeros(img.shape[:2], bool), 1), "mask is empty"),
    (lambda m, t, img: inpaint_image(m, t, img, np.ones(img.shape[:2], bool), 1), "covers the whole image"),
    (lambda m, t, img: inpaint_image(m, t, img, box=(0, 0, 4, 4), label=10), "label must be in 0..9"),
    (lambda m, t, img: outpaint_image(m, t, img, canvas=(4, 4)), "smaller than the source"),
    (lambda m, t, img: inpaint_image(m, t, img[:-1, :-1], box=(0, 0, 4, 4)), "not a multiple"),
])
def test_bad_input_messages(model, tok, call, msg):
    img = _image(tok, 4 * tok.downsample)
    with pytest.raises(ARPGError, match=msg) as e:
        call(model, tok, img)
    assert "\n" not in str(e.value)


def test_load_mask_from_png(tmp_path):
    from PIL import Image

    m = np.zeros((8, 12), dtype=np.uint8)
    m[2:4, 5:9] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    assert load_mask(str(tmp_path / "m.png"), 8, 12).sum() == 8
