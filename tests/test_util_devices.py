"""Device and dtype helpers: the warning for low-precision work on a CPU that emulates it."""

from __future__ import annotations

import warnings

import pytest
import torch

import arpg
from arpg.train.config import resolve_dtype
from arpg.util import devices


def test_float32_is_always_native():
    assert devices.cpu_has_native(torch.float32)
    assert isinstance(devices.cpu_has_native(torch.bfloat16), bool)


@pytest.mark.parametrize("dtype,name", [(torch.bfloat16, "bf16"), (torch.float16, "fp16")])
def test_warns_once_per_call_where_emulated(monkeypatch, dtype, name):
    monkeypatch.setattr(devices, "cpu_has_native", lambda d: d == torch.float32)
    with pytest.warns(RuntimeWarning, match=f"no native {name} matmul.*use fp32") as got:
        devices.warn_if_emulated(torch.device("cpu"), dtype)
    assert len(got) == 1


def test_silent_where_native_or_not_asked(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monkeypatch.setattr(devices, "cpu_has_native", lambda d: True)
        devices.warn_if_emulated(torch.device("cpu"), torch.bfloat16)
        monkeypatch.setattr(devices, "cpu_has_native", lambda d: d == torch.float32)
        devices.warn_if_emulated(torch.device("cpu"), torch.float32)
        devices.warn_if_emulated(torch.device("cpu"), None)
        devices.warn_if_emulated(torch.device("cuda"), torch.bfloat16)  # a GPU's support is checked elsewhere


def test_generate_and_training_warn_on_emulated_bf16(monkeypatch, tiny_model):
    monkeypatch.setattr(devices, "cpu_has_native", lambda d: d == torch.float32)
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,))))
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        out = arpg.generate(tiny_model, [1], steps=2, dtype=torch.bfloat16, generator=gen)
    assert out.shape == (1, tiny_model.config.n_cells)
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_dtype("auto", torch.device("cpu")) == torch.float32


def test_cli_prints_the_warning_as_one_line(monkeypatch, tiny_weights, tmp_path, capsys):
    from arpg.cli import main

    monkeypatch.setattr(devices, "cpu_has_native", lambda d: d == torch.float32)
    args = ["sample", "--model", str(tiny_weights / "arpg.safetensors"), "--tokenizer",
            str(tiny_weights / "vq.safetensors"), "--steps", "2", "--device", "cpu", "--dtype", "bf16",
            "--labels", "1", "--out", str(tmp_path / "s")]
    assert main(args) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(err) == 1 and err[0].startswith("arpg sample: warning: this CPU has no native bf16 matmul")
