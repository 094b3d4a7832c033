"""``shan-train`` and ``shan-eval`` through their ``main(argv)`` on a tiny dataset in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shan.cli import evaluate as eval_cli
from shan.cli import train as train_cli
from tests.test_train import make_synthetic


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(tmp_path: Path) -> Path:
    cfg = {
        "model": {"img_dim": 32, "embed_dim": 32, "word_dim": 16, "max_words": 12},
        "data": {"root": str(tmp_path), "name": "synth", "val_split": "dev"},
        "train": {"epochs": 1, "lr": 1e-3, "batch_size": 8, "device": "cpu", "log_every": 2},
    }
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg))
    return p


def test_train_then_eval(tmp_path: Path, one_thread, capsys) -> None:
    make_synthetic(tmp_path, splits={"train": 10, "dev": 5, "test": 10})
    out = tmp_path / "run"
    rc = train_cli.main(
        [
            "--config",
            str(_config(tmp_path)),
            "--set",
            f"train.out_dir={out}",
            "--set",
            "epochs=2",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "best checkpoint:" in printed and "rSum" in printed
    assert (out / "best" / "model.safetensors").is_file()
    assert json.loads((out / "train_config.json").read_text())["train"]["epochs"] == 2
    assert len((out / "log.jsonl").read_text().splitlines()) == 2

    js = tmp_path / "res.json"
    rc = eval_cli.main(
        [
            "--checkpoint",
            str(out / "best"),
            "--data-root",
            str(tmp_path),
            "--name",
            "synth",
            "--split",
            "test",
            "--fold5",
            "--json",
            str(js),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Image→Text: R@1" in printed and "rSum" in printed and "5-fold mean" in printed
    res = json.loads(js.read_text())
    assert res["n_images"] == 10 and res["n_captions"] == 50 and res["fold_size"] == 2
    assert len(res["folds"]) == 5
    six = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
    assert res["fold5"]["rsum"] == pytest.approx(sum(res["fold5"][k] for k in six))
    assert res["all"]["rsum"] == pytest.approx(sum(res["all"][k] for k in six))
    # with 2 images per fold every caption's image is in the top 2: R@5 is 100
    assert res["fold5"]["t2i_r5"] == 100.0


def test_print_config(capsys, tmp_path: Path) -> None:
    rc = train_cli.main(["--config", str(_config(tmp_path)), "--set", "lr=5e-5", "--print-config"])
    assert rc == 0
    dump = json.loads(capsys.readouterr().out)
    assert dump["train"]["lr"] == 5e-5 and dump["model"]["img_dim"] == 32


def test_train_errors_are_messages(tmp_path: Path, capsys) -> None:
    rc = train_cli.main(["--config", str(_config(tmp_path)), "--no-progress"])  # no data written
    assert rc == 2
    err = capsys.readouterr().err
    assert "shan-train: error: dataset directory not found" in err and "Traceback" not in err
    assert train_cli.main(["--config", str(tmp_path / "missing.json")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert train_cli.main(["--config", str(_config(tmp_path)), "--set", "train.lr=fast"]) == 2
    assert "train" in capsys.readouterr().err


def test_eval_errors_are_messages(tmp_path: Path, capsys, one_thread) -> None:
    args = ["--data-root", str(tmp_path), "--name", "synth", "--split", "test", "--no-progress"]
    assert eval_cli.main(["--checkpoint", str(tmp_path / "none"), *args]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    # a checkpoint whose img_dim differs from the features
    from shan.checkpoint import save_checkpoint
    from shan.config import ModelConfig
    from shan.data.vocab import Vocabulary
    from shan.model import SHAN

    make_synthetic(tmp_path, splits={"test": 5}, img_dim=8)
    vocab = Vocabulary.build(["zzz"])  # no caption word is known
    ck = save_checkpoint(
        tmp_path / "ck", SHAN(ModelConfig(img_dim=32, embed_dim=8, vocab_size=len(vocab))), vocab
    )
    assert eval_cli.main(["--checkpoint", str(ck), *args]) == 2
    err = capsys.readouterr().err
    assert "size 8 but the model expects img_dim=32" in err
    # captions with no known word are all <unk> and still score
    make_synthetic(tmp_path, splits={"test": 5}, img_dim=32)
    assert eval_cli.main(["--checkpoint", str(ck), *args]) == 0


@pytest.mark.slow
def test_torchrun_ddp_two_cpu_processes(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node=2`` (gloo on CPU): DDP + DistributedSampler, rank 0 writes."""
    import os
    import subprocess
    import sys

    make_synthetic(tmp_path, splits={"train": 16, "dev": 5})
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "shan.cli.train",
        "--config",
        str(_config(tmp_path)),
        "--set",
        f"train.out_dir={out}",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world=2" in proc.stdout and proc.stdout.count("best checkpoint:") == 1
    assert (out / "best" / "model.safetensors").is_file()
    assert (out / "last" / "train_state.pt").is_file()
