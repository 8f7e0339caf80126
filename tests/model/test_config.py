import pytest
import torch

from arpg import ARPG, ARPGError, get_preset
from arpg.model.config import swiglu_hidden
from arpg.model import count_parameters

PUBLISHED = {
    "ARPG-L": (319_845_376, 198, 1024, 24, 16, 2816),
    "ARPG-XL": (718_997_760, 294, 1280, 36, 20, 3584),
    "ARPG-XXL": (1_302_449_664, 390, 1536, 48, 24, 4096),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_presets_match_release(name):
    params, entries, dim, n_layer, n_head, hidden = PUBLISHED[name]
    with torch.device("meta"):
        model = ARPG.from_preset(name)
    cfg = model.config
    assert (cfg.dim, cfg.n_layer, cfg.n_head, cfg.ffn_hidden, cfg.head_dim) == (dim, n_layer, n_head, hidden, 64)
    assert count_parameters(model) == params
    sd = model.state_dict()
    assert len(sd) == entries
    assert "rope" not in sd
    n = n_layer // 2
    assert sd["embeddings.weight"].shape == (17387, dim)
    assert sd["head.weight"].shape == (16384, dim)
    for key in ("to_q", "to_k", "to_v", "proj"):
        assert sd[f"layers.self_dec.{n - 1}.attn.{key}.weight"].shape == (dim, dim)
    assert f"layers.self_dec.{n}.attn.to_q.weight" not in sd
    assert sd[f"layers.cross_dec.{n - 1}.attn.to_q.weight"].shape == (dim, dim)
    assert "layers.cross_dec.0.attn.to_k.weight" not in sd
    assert sd["layers.self_dec.0.ffn.w1.weight"].shape == (hidden, dim)
    assert sd["layers.cross_dec.0.ffn.w2.weight"].shape == (dim, hidden)
    for key in ("layers.norm.weight", "norm.weight", "layers.self_dec.0.attn_norm.weight",
                "layers.cross_dec.0.ffn_norm.weight"):
        assert sd[key].shape == (dim,)
    assert sd["layers.to_k.weight"].shape == sd["layers.to_v.weight"].shape == (dim, dim)


def test_token_id_layout():
    cfg = get_preset("ARPG-L")
    assert cfg.mask_id == 16384 and cfg.class_offset == 16385 and cfg.null_class_id == 17385
    assert cfg.n_embeddings == 17387 and cfg.n_cells == 256


def test_swiglu_hidden_rounding():
    assert [swiglu_hidden(d) for d in (1024, 1280, 1536)] == [2816, 3584, 4096]


def test_overrides_and_errors():
    cfg = get_preset("ARPG-L", num_classes=10, vocab_size=512, dim=512, n_head=8)
    assert cfg.n_embeddings == 512 + 1 + 10 + 2 and cfg.ffn_hidden == swiglu_hidden(512)
    with pytest.raises(ARPGError, match="unknown preset"):
        get_preset("ARPG-XXXL")
    with pytest.raises(ARPGError, match="unknown override"):
        get_preset("ARPG-L", depth=3)
    with pytest.raises(ARPGError, match="n_layer must be even"):
        get_preset("ARPG-tiny", n_layer=3)
