import pytest
import torch


#: What the memory probe reports in tests: no test may pass or fail by how much memory the host has free.
#: Tests of the memory checks themselves patch the probe lower.
TEST_FREE_MEMORY = 16 * 2**30


@pytest.fixture(autouse=True)
def _pinned_memory_probe(monkeypatch):
    from arpg.util import devices

    monkeypatch.setattr(devices, "available_memory", lambda device: TEST_FREE_MEMORY)


@pytest.fixture(autouse=True)
def _one_thread():
    # Test tensors are small: one thread avoids oversubscription on a shared 2-core machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny(**overrides):
    from arpg import ARPG

    torch.manual_seed(1234)
    model = ARPG.from_preset("ARPG-tiny", **overrides)
    # The published init zeroes the head; give it weights so logits carry information in tests.
    torch.nn.init.normal_(model.head.weight, std=0.5)
    return model.eval()


#: ARPG-tiny overrides for the from-scratch class conditioning (attendable class key, class-aware queries)
CONDITIONED = dict(class_rope="identity", class_queries=True)


@pytest.fixture
def tiny_model():
    return _tiny()


@pytest.fixture(params=["published", "conditioned"])
def any_tiny_model(request):
    """ARPG-tiny with the published class conditioning, then with :data:`CONDITIONED`."""
    return _tiny(**(CONDITIONED if request.param == "conditioned" else {}))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """Files of a random VQ-tiny (1 channel, 16 px -> 4x4 codes), a matching ARPG-tiny and its ControlARPG (Canny)
    twin, plus an image, a mask and an edge map."""
    import numpy as np
    from PIL import Image

    from arpg import ARPG, save_model
    from arpg.vq import VQTokenizer, save_tokenizer

    d = tmp_path_factory.mktemp("tiny_weights")
    torch.manual_seed(0)
    tok = VQTokenizer.from_preset("VQ-tiny", in_channels=1)
    model = ARPG.from_preset("ARPG-tiny", vocab_size=tok.codebook_size, grid_size=4)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    save_tokenizer(tok, d / "vq.safetensors")
    save_model(model, d / "arpg.safetensors")
    # The same with a Canny condition encoder (ControlARPG): maps of the 16 px image, 4 px per cell.
    control = ARPG.from_preset("ARPG-tiny", vocab_size=tok.codebook_size, grid_size=4, condition_channels=1,
                               condition_stride=4, condition_kind="canny", condition_mode="replace")
    torch.nn.init.normal_(control.head.weight, std=0.5)
    torch.nn.init.normal_(control.condition_encoder.out.weight, std=30.0)  # a condition that visibly matters
    save_model(control, d / "arpg_control.safetensors")
    edges = np.zeros((16, 16), dtype=np.uint8)
    edges[3, 2:14] = edges[12, 2:14] = 255
    Image.fromarray(edges).save(d / "cmap.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)).save(d / "img.png")
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).save(d / "mask.png")
    return d


@pytest.fixture(scope="module")
def editing_tok():
    """VQ-tiny (3 channels, 4x downsampling) with fixed random weights, for the editing tests."""
    from arpg.vq import VQTokenizer

    torch.manual_seed(0)
    return VQTokenizer.from_preset("VQ-tiny").eval()


@pytest.fixture
def editing_model(editing_tok):
    """ARPG-tiny on a 4x4 grid matching :func:`editing_tok`'s codebook (head with real weights)."""
    from arpg import ARPG

    torch.manual_seed(1)
    m = ARPG.from_preset("ARPG-tiny", vocab_size=editing_tok.codebook_size, grid_size=4)
    torch.nn.init.normal_(m.head.weight, std=0.5)
    return m.eval()


T5_WORDS = ["a", "an", "two", "red", "green", "blue", "cat", "dog", "horse", "to", "the", "left", "of", "right",
         "above", "below", "zebra", "sheep"]


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory):
    """A 2-layer T5 encoder (width 24) with a word-level tokenizer, saved as a local folder."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    folder = tmp_path_factory.mktemp("tiny-t5")
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *T5_WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=len(vocab), d_model=24, d_kv=8, d_ff=32, num_layers=2, num_heads=3,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    transformers.T5EncoderModel(config).save_pretrained(folder)
    return folder


def run_torchrun(cli_args: list[str], nproc: int = 2, timeout: int = 240):
    """``python -m torch.distributed.run --nproc_per_node N -m arpg.cli ARGS`` on a free local port (gloo on a CPU),
    one thread per process; returns the finished process."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo / "src"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(port), "-m", "arpg.cli", *cli_args]
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)


def record_pass2_logits(monkeypatch, model) -> list:
    """The logits of every Pass-2 step of ``model`` (the network's one Pass-2 decoding step), in decoding order."""
    seen = []
    original = model.pass2

    def recording(*a, **k):
        logits = original(*a, **k)
        seen.append(logits.clone())
        return logits

    monkeypatch.setattr(model, "pass2", recording)
    return seen
