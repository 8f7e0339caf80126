"""Prompt encoders: a tiny T5 built from a config and saved locally goes through the real loading code (no
download); left padding, truncation with a warning, one-line errors, and generate(prompts=...)."""

import random

import pytest
import torch

import arpg
from arpg import ARPGError
from arpg.text import T5TextEncoder, check_prompts, left_pad, load_text_encoder

transformers = pytest.importorskip("transformers")

def test_the_tiny_t5_round_trip_left_pads_and_matches_the_model(tiny_t5):
    enc = load_text_encoder(tiny_t5, length=6)
    assert isinstance(enc, T5TextEncoder) and (enc.dim, enc.length) == (24, 6)
    feats, mask = enc.encode(["a red cat", "two dogs"])
    assert feats.shape == (2, 6, 24) and feats.dtype == torch.float32
    assert mask.tolist() == [[False, False, True, True, True, True], [False, False, False, True, True, True]]
    assert bool((feats[~mask] == 0).all())
    # the real slots are the encoder's own outputs for the prompt alone
    ids = enc.tokenizer(["a red cat"], return_tensors="pt")
    with torch.no_grad():
        alone = enc.model(**ids).last_hidden_state[0]
    torch.testing.assert_close(feats[0, 2:], alone, atol=1e-5, rtol=1e-5)


def test_long_prompts_are_truncated_with_a_warning(tiny_t5):
    enc = load_text_encoder(tiny_t5, length=4)
    with pytest.warns(UserWarning, match="1 of 2 prompts are longer than 4 tokens"):
        feats, mask = enc.encode(["a red cat to the left of a dog", "a cat"])
    assert bool(mask[0].all()) and mask[1].sum() == 3


def test_prompt_and_loading_refusals(tmp_path):
    for bad, match in (("a cat", "list of strings"), ([], "no prompts"), (["a", 3], "prompt 1 is a int"),
                       (["ok", ""], "prompt 1 is empty")):
        with pytest.raises(ARPGError, match=match):
            check_prompts(bad)
    with pytest.raises(ARPGError, match="cannot load the text encoder .*local folder") as e:
        load_text_encoder(tmp_path / "missing")
    assert "\n" not in str(e.value)


def test_left_pad_keeps_the_real_tokens_last():
    feats = torch.randn(2, 5, 3)
    mask = torch.tensor([[True, True, False, False, False], [True, True, True, True, True]])
    out, keep = left_pad(feats, mask, 4)
    assert keep.tolist() == [[False, False, True, True], [True, True, True, True]]
    assert torch.equal(out[0, 2:], feats[0, :2]) and torch.equal(out[1], feats[1, :4])


def test_generate_from_prompts_through_the_tiny_t5(tiny_t5):
    enc = load_text_encoder(tiny_t5, length=6)
    m = arpg.ARPG.from_preset("ARPG-tiny-T2I", text_dim=24).eval()
    seed = random.randrange(10**6)
    a = arpg.generate(m, prompts=["a red cat", "a blue dog"], text_encoder=enc, steps=3,
                      generator=torch.Generator().manual_seed(seed))
    feats, mask = enc.encode(["a red cat", "a blue dog"])
    b = arpg.generate(m, text=feats, text_mask=mask, steps=3, generator=torch.Generator().manual_seed(seed))
    assert a.shape == (2, 64) and torch.equal(a, b)
    with pytest.raises(ARPGError, match="gives 6 x 24 features; this model takes 6 x 8"):
        arpg.generate(arpg.ARPG.from_preset("ARPG-tiny-T2I", text_dim=8), prompts=["a cat"], text_encoder=enc)
