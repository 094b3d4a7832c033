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


# ---- the CLI package; issue 9, findings 3 and 6: one line, exit code 2, nothing lost ----------

ROOT = Path(__file__).resolve().parents[1]


def _one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: "), err
    return err[0]


def _checkpoint(tmp_path: Path, **model_changes) -> Path:
    from shan.checkpoint import save_checkpoint
    from shan.config import ModelConfig
    from shan.data.vocab import Vocabulary
    from shan.model import SHAN

    vocab = Vocabulary.build(["w0 w1 w2"])
    ck = save_checkpoint(
        tmp_path / "ck", SHAN(ModelConfig(img_dim=32, embed_dim=8, vocab_size=len(vocab))), vocab
    )
    if model_changes:
        cfg = json.loads((ck / "config.json").read_text())
        cfg["model"].update(model_changes)
        (ck / "config.json").write_text(json.dumps(cfg))
    return ck


def test_library_modules_hold_no_argparse() -> None:
    for mod in ("train.py", "extract.py", "evaluation.py"):
        assert "argparse" not in (ROOT / "shan" / mod).read_text(), mod
    assert not (ROOT / "shan" / "evaluate.py").exists()  # the CLI near-homonym of evaluation.py
    text = (ROOT / "pyproject.toml").read_text()
    for line in (
        'shan-train = "shan.cli.train:main"',
        'shan-eval = "shan.cli.evaluate:main"',
        'shan-extract = "shan.cli.extract:main"',
    ):
        assert line in text


@pytest.mark.parametrize("module", ["shan.cli.train", "shan.cli.evaluate", "shan.cli.extract"])
def test_python_m_entry_points(module: str) -> None:
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0 and "usage:" in proc.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--chunk", "0"], "argument --chunk: must be at least 1, got 0"),
        (["--score-chunks", "0", "0"], "argument --score-chunks: must be at least 1, got 0"),
        (["--max-images", "-5"], "argument --max-images: must be at least 1"),
        (["--chunk", "lots"], "expected a whole number, got 'lots'"),
    ],
)
def test_eval_bad_numbers_are_one_line(tmp_path: Path, capsys, argv, message) -> None:
    base = ["--checkpoint", str(tmp_path), "--data-root", str(tmp_path)]
    with pytest.raises(SystemExit) as info:
        eval_cli.main([*base, *argv])
    assert info.value.code == 2
    assert message in _one_error_line(capsys, "shan-eval")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"embed_dim": 8000}, "embed_dim=8000"),
        ({"embed_dim": -1}, "embed_dim"),
        ({"embed_dim": "big"}, "embed_dim"),
        ({"embed_dim": None}, "embed_dim"),
        ({"smooth": float("nan")}, "smooth"),
        ({"mu": float("inf")}, "mu"),
        ({"use_l2l": "no"}, "use_l2l"),
    ],
)
def test_eval_bad_checkpoint_config_is_one_line(tmp_path: Path, capsys, change, field) -> None:
    make_synthetic(tmp_path, splits={"test": 5}, img_dim=32)
    ck = _checkpoint(tmp_path, **change)
    args = ["--data-root", str(tmp_path), "--name", "synth", "--device", "cpu", "--no-progress"]
    assert eval_cli.main(["--checkpoint", str(ck), *args]) == 2
    line = _one_error_line(capsys, "shan-eval")
    assert field in line and "Traceback" not in line


def test_eval_unwritable_json_refused_before_the_work(tmp_path: Path, capsys, monkeypatch) -> None:
    import shan.cli.evaluate as ev

    monkeypatch.setattr(ev, "load_checkpoint", lambda *a, **k: 1 / 0)  # must not be reached
    (tmp_path / "a_file").write_text("x")
    base = ["--checkpoint", "x", "--data-root", str(tmp_path), "--no-progress"]
    for target in (tmp_path / "a_file" / "res.json", tmp_path):
        assert eval_cli.main([*base, "--json", str(target)]) == 2
        _one_error_line(capsys, "shan-eval")


def test_eval_metrics_not_lost_when_the_json_write_fails(
    tmp_path: Path, capsys, monkeypatch, one_thread
) -> None:
    import shan.cli.evaluate as ev

    make_synthetic(tmp_path, splits={"test": 5}, img_dim=32)
    ck = _checkpoint(tmp_path)

    def disk_full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ev, "write_text", disk_full)
    argv = ["--checkpoint", str(ck), "--data-root", str(tmp_path), "--name", "synth",
            "--device", "cpu", "--no-progress", "--json", str(tmp_path / "res.json")]  # fmt: skip
    assert eval_cli.main(argv) == 2
    out = capsys.readouterr()
    assert "rSum" in out.out  # the metrics were printed before the write was tried
    assert out.err.strip().splitlines() == ["shan-eval: error: [Errno 28] No space left on device"]
    assert not list(tmp_path.glob("*res.json*"))  # no half-written file either


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    from shan.files import atomic_path, write_text

    p = write_text(tmp_path / "r.json", "old")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["r.json"]


def test_extract_unwritable_out_refused_before_loading(tmp_path: Path, capsys) -> None:
    from shan.cli import extract as extract_cli

    (tmp_path / "a_file").write_text("x")
    weights = str(tmp_path / "no-weights")
    argv = ["--detector", "toy", "--weights", weights, "--images", str(tmp_path),
            "--split", "test", "--out", str(tmp_path / "a_file" / "out")]  # fmt: skip
    assert extract_cli.main(argv) == 2
    line = _one_error_line(capsys, "shan-extract")
    assert "a_file" in line and "no-weights" not in line  # --out is checked first
    with pytest.raises(SystemExit) as info:
        extract_cli.main([*argv[:-2], "--out", str(tmp_path / "o"), "--num-regions", "0"])
    assert info.value.code == 2
    _one_error_line(capsys, "shan-extract")
    with pytest.raises(SystemExit):
        extract_cli.main([*argv[:-2], "--out", "o", "--min-regions", "9", "--max-regions", "3"])
    assert "more than --max-regions" in _one_error_line(capsys, "shan-extract")


def test_train_unwritable_out_dir_and_bad_values_are_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "a_file").write_text("x")
    cfg = str(_config(tmp_path))
    out = f"train.out_dir={tmp_path / 'a_file' / 'run'}"
    assert train_cli.main(["--config", cfg, "--set", out, "--no-progress"]) == 2
    assert "a_file" in _one_error_line(capsys, "shan-train")
    for bad, field in [
        ("train.batch_size=0", "batch_size"),
        ("train.lr=nan", "lr"),
        ("model.use_l2l=maybe", "use_l2l"),
        ("model.embed_dim=99999", "embed_dim"),
    ]:
        assert train_cli.main(["--config", cfg, "--set", bad, "--print-config"]) == 2
        assert field in _one_error_line(capsys, "shan-train")
