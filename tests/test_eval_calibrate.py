"""``shan-eval --calibrate``: every step's score distributions saved where the app reads them."""

from __future__ import annotations

from pathlib import Path

import torch

from shan.calibration import load_calibration
from shan.checkpoint import save_checkpoint
from shan.cli import evaluate as eval_cli
from shan.config import ModelConfig
from shan.data.vocab import Vocabulary
from shan.model.shan import SHAN
from tests.test_train import make_synthetic


def _checkpoint(tmp_path: Path, caps: list[str]) -> Path:
    vocab = Vocabulary.build(caps)
    cfg = ModelConfig(img_dim=32, embed_dim=16, word_dim=8, max_words=12, vocab_size=len(vocab))
    out = tmp_path / "ck"
    save_checkpoint(out, SHAN(cfg), vocab)
    return out


def test_calibrate_saves_calibration_json_into_the_checkpoint(tmp_path: Path, capsys) -> None:
    torch.set_num_threads(1)
    d = make_synthetic(tmp_path, splits={"test": 10})
    ck = _checkpoint(tmp_path, (d / "test_caps.txt").read_text().splitlines())
    args = ["--checkpoint", str(ck), "--data-root", str(tmp_path), "--name", "synth",
            "--split", "test", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert eval_cli.main(args) == 0
    assert load_calibration(ck) is None  # nothing written without the flag
    assert eval_cli.main([*args, "--calibrate"]) == 0
    assert "calibration.json" in capsys.readouterr().out
    cal = load_calibration(ck)
    assert cal is not None and cal.step("total").fitted
    assert cal.to_dict()["source"]["n_captions"] == 50
    other = tmp_path / "elsewhere"
    assert eval_cli.main([*args, "--calibrate", "--calibration-dir", str(other)]) == 0
    assert load_calibration(other) is not None


def test_calibrate_into_an_unwritable_place_is_refused_before_scoring(tmp_path, capsys) -> None:
    d = make_synthetic(tmp_path, splits={"test": 5})
    ck = _checkpoint(tmp_path, (d / "test_caps.txt").read_text().splitlines())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = eval_cli.main(["--checkpoint", str(ck), "--data-root", str(tmp_path), "--name", "synth",
                        "--split", "test", "--device", "cpu", "--no-progress", "--calibrate",
                        "--calibration-dir", str(blocker)])  # fmt: skip
    assert rc != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "shan-eval" in err
    assert "Image→Text" not in capsys.readouterr().out
