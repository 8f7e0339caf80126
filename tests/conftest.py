import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # Fresh but reproducible randomness per test; tests on 2 cores are faster single-threaded per process.
    torch.manual_seed(torch.initial_seed() % (2**31))
    yield


@pytest.fixture
def tiny_model():
    from arpg import ARPG

    torch.manual_seed(1234)
    model = ARPG.from_preset("ARPG-tiny")
    # The published init zeroes the head; give it weights so logits carry information in tests.
    torch.nn.init.normal_(model.head.weight, std=0.5)
    return model.eval()
