"""The text-to-image demo's recorded recipe: the command lines in its card parse to exactly the configs the
retraining runs, and each stage reads what the one before it writes."""

from pathlib import Path

from arpg.cli import build_parser
from arpg.commands import extract_codes, train, train_vq
from arpg.demo.t2i_retrain import FINAL, t2i_commands, t2i_configs


def test_recorded_commands_parse_to_the_configs_the_retraining_runs(tmp_path):
    parser = build_parser()
    vq_cmd, ex_cmd, tr_cmd = (parser.parse_args(c) for c in t2i_commands(str(tmp_path)))
    vq_cfg, ex_cfg, tr_cfg = t2i_configs(str(tmp_path))
    assert train_vq.config_from_args(vq_cmd) == vq_cfg
    assert extract_codes.config_from_args(ex_cmd) == ex_cfg
    (tmp_path / "vq").mkdir()
    (tmp_path / "vq" / "tokenizer.safetensors").write_bytes(b"")  # train checks that its --tokenizer exists
    assert train.config_from_args(tr_cmd) == tr_cfg


def test_stages_chain_and_never_mirror_the_scenes(tmp_path):
    vq, extract, tr = t2i_commands(str(tmp_path))
    assert extract[extract.index("--tokenizer") + 1] == str(Path(vq[vq.index("--out") + 1]) / "tokenizer.safetensors")
    assert extract[extract.index("--text-encoder") + 1] == str(tmp_path / "text")
    assert tr[tr.index("--codes") + 1] == extract[extract.index("--out") + 1]
    assert "--single-crop" in extract and "--hflip" not in vq  # a mirror would swap "left" and "right"
    assert "--ema" in tr and FINAL.parts[0] == Path(tr[tr.index("--out") + 1]).name
