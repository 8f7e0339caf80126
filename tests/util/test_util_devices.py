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
    with warnings.catch_warnings():  # resolving the dtype only checks it: the trainer warns once set up
        warnings.simplefilter("error")
        assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
        assert resolve_dtype("auto", torch.device("cpu")) == torch.float32


def _code_set(path):
    import numpy as np

    from arpg.data.codes import write_code_set

    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,))))
    write_code_set(path, rng.integers(0, 16, (8, 1, 16)), rng.integers(0, 4, 8), vocab_size=16,
                   class_names=list("abcd"), shard_size=8)
    return str(path)


@pytest.mark.parametrize("native", [False, True])
def test_training_warns_only_once_set_up(monkeypatch, tmp_path, capsys, native):
    """``arpg train --dtype bf16``: one warning line where bf16 is emulated, none where native; a refused
    run (here: a batch that is no multiple of the accumulation) prints its error line alone either way."""
    from arpg.cli import main

    monkeypatch.setattr(devices, "cpu_has_native", (lambda d: True) if native else (lambda d: d == torch.float32))
    codes = _code_set(tmp_path / "codes")
    base = ["train", "--codes", codes, "--preset", "ARPG-nano", "--steps", "1", "--batch-size", "4", "--device", "cpu",
            "--dtype", "bf16", "--sample-every", "0"]
    assert main([*base, "--out", str(tmp_path / "run")]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert warned == ([] if native else [warned[0]])
    assert native or warned[0].startswith("arpg train: warning: this CPU has no native bf16 matmul")
    assert main([*base, "--out", str(tmp_path / "bad"), "--grad-accum", "3"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "must be a multiple of world size" in err[0], err


def test_cli_prints_the_warning_as_one_line(monkeypatch, tiny_weights, tmp_path, capsys):
    from arpg.cli import main

    monkeypatch.setattr(devices, "cpu_has_native", lambda d: d == torch.float32)
    args = ["sample", "--model", str(tiny_weights / "arpg.safetensors"), "--tokenizer",
            str(tiny_weights / "vq.safetensors"), "--steps", "2", "--device", "cpu", "--dtype", "bf16",
            "--labels", "1", "--out", str(tmp_path / "s")]
    assert main(args) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(err) == 1 and err[0].startswith("arpg sample: warning: this CPU has no native bf16 matmul")


def test_memory_probe_reads_this_host(monkeypatch):
    monkeypatch.undo()  # the suite pins the probe (conftest); read the real one here
    free = devices.available_memory(torch.device("cpu"))
    assert free is None or (isinstance(free, int) and free > 0)


def test_memory_checks_follow_the_probe(monkeypatch, tiny_model):
    """Every memory check reads the one probe: pinned low, a sampling batch is refused in one line."""
    monkeypatch.setattr(devices, "available_memory", lambda device: 1024)
    with pytest.raises(arpg.ARPGError, match="GiB free; use a batch size of at most 1"):
        arpg.generate(tiny_model, [1, 2], steps=2)


@pytest.mark.parametrize("native", [False, True])
def test_packing_availability_follows_the_probe(monkeypatch, native):
    """Both branches of the bf16 packing rule on every machine, whatever its CPU (the probe forced)."""
    from arpg.speedups import packing

    monkeypatch.setattr(devices, "cpu_has_native", (lambda d: True) if native else (lambda d: d == torch.float32))
    if not torch.backends.mkldnn.is_available():
        assert "no oneDNN" in packing.packing_available(torch.bfloat16)
        return
    assert packing.packing_available(torch.float32) is None
    assert (packing.packing_available(torch.bfloat16) is None) == native
    if not native:
        assert "no native bf16 matmul" in packing.packing_available(torch.bfloat16)
    assert "float32 or bfloat16, not float16" in packing.packing_available(torch.float16)


def test_freed_memory_goes_back_through_glibc_where_there_is_glibc():
    import platform

    from arpg.util import memory

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert memory._trim() is not None  # malloc_trim found: packing in place can give pages back
    memory.release_freed_memory()  # never raises, with or without glibc


def test_the_mmap_threshold_can_be_fixed_where_there_is_glibc():
    import platform
    import subprocess
    import sys

    code = "from arpg.util.memory import fix_mmap_threshold; print(fix_mmap_threshold())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert out.stdout.strip() == str(glibc)
