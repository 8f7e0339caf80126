"""The word-level prompt encoder: the TextEncoder interface, a save / load round trip, training reads the
facts back, the one-line refusals and warnings."""

import numpy as np
import pytest
import torch

from arpg.errors import ARPGError
from arpg.text import load_text_encoder
from arpg.text.words import build_vocab, is_word_encoder, load_word_encoder, train_word_encoder, words_of

CAPTIONS = ["a red cat", "a blue cat", "a red dog", "a blue dog", "two cats", "two dogs",
            "a red cat to the left of a blue dog", "a blue dog above a red cat"]


def _facts():
    return {"colour": [("red" in c) + 2 * ("blue" in c and "red" not in c) for c in CAPTIONS],
            "animal": [0 if c.split()[-1].startswith("cat") else 1 for c in CAPTIONS]}


@pytest.fixture(scope="module")
def trained():
    return train_word_encoder(CAPTIONS, _facts(), dim=32, n_layer=1, n_head=2, length=10, steps=150, batch_size=16,
                              lr=5e-3, seed=int(np.random.SeedSequence().entropy % 1000), progress=False)


def test_features_are_left_padded_with_the_real_words_last(trained):
    enc, _ = trained
    feats, mask = enc.encode(["a red cat", "a blue dog to the left of a red cat"])
    assert feats.shape == (2, 10, 32) and mask.shape == (2, 10) and feats.dtype == torch.float32
    assert mask.sum(1).tolist() == [3, 10]
    assert mask[0, -3:].all() and not mask[0, :-3].any()
    assert torch.all(feats[0, :-3] == 0)
    assert not torch.allclose(feats[0, -1], enc.encode(["a red dog"])[0][0, -1])  # the words matter


def test_training_reads_the_facts_back(trained):
    _, record = trained
    assert record["final_loss"] < 0.25 * record["first_loss"]
    assert all(a == 1.0 for a in record["train_accuracy"].values()), record


def test_save_and_load_give_the_same_features(trained, tmp_path):
    enc, _ = trained
    enc.save(tmp_path / "enc")
    assert is_word_encoder(tmp_path / "enc") and not is_word_encoder(tmp_path)
    again = load_text_encoder(tmp_path / "enc", length=10)
    prompts = ["two dogs", "a blue cat above a red dog"]
    assert torch.equal(enc.encode(prompts)[0], again.encode(prompts)[0])
    assert load_word_encoder(tmp_path / "enc", length=6).encode(["two dogs", "a cat"])[0].shape == (2, 6, 32)
    wide = load_word_encoder(tmp_path / "enc", length=20)  # more slots than positions: left-padded further
    f20, m20 = wide.encode(prompts)
    assert f20.shape == (2, 20, 32) and torch.equal(f20[:, 10:], enc.encode(prompts)[0]) and not m20[:, :10].any()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('["not", "an", "object"]')
    assert not is_word_encoder(tmp_path / "bad")


def test_unknown_words_and_cut_prompts_warn_and_empty_ones_are_refused(trained):
    enc, _ = trained
    with pytest.warns(UserWarning, match="never saw.*purple"):
        enc.encode(["a purple cat"])
    with pytest.warns(UserWarning, match="longer than 10 words"):
        enc.encode(["a red cat to the left of a blue dog above a red cat"])
    with pytest.raises(ARPGError, match="prompt 1 has no words"):
        enc.encode(["a cat", "!!!"])
    with pytest.raises(ARPGError, match="prompt 0 is empty"):
        enc.encode([" "])


def test_vocabulary_and_word_splitting():
    assert words_of("A Red-cat, two DOGS!") == ["a", "red", "cat", "two", "dogs"]
    assert build_vocab(["b a", "a c"]) == ["<pad>", "<unk>", "a", "b", "c"]
    with pytest.raises(ARPGError, match="fact 'x' has 1 values for 2 captions"):
        train_word_encoder(["a", "b"], {"x": [0]}, steps=1, progress=False)
    with pytest.raises(ARPGError, match="no facts"):
        train_word_encoder(["a", "b"], {}, steps=1, progress=False)
    with pytest.raises(ARPGError, match="steps must be >= 1"):
        train_word_encoder(["a", "b"], {"x": [0, 1]}, steps=0, progress=False)
    with pytest.raises(ARPGError, match="caption 1 has no words"):
        train_word_encoder(["a", "?"], {"x": [0, 1]}, steps=1, progress=False)
