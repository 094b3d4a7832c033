"""Checkpoint save/load round trip, Hub resolution, and clear errors for bad checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from shan.config import ModelConfig
from shan.data.vocab import TransformerTextProcessor, Vocabulary

CAPS = ["a red cube on the left", "two blue balls", "a green cylinder near a cube"]


def _model(**kw):
    from shan.model import SHAN

    vocab = Vocabulary.build(CAPS)
    cfg = ModelConfig(
        img_dim=12, embed_dim=16, vocab_size=len(vocab), word_dim=8, max_words=10, **kw
    )
    torch.manual_seed(0)
    return SHAN(cfg), vocab


def _scores(model, text, feats, caps):
    model.eval()
    with torch.no_grad():
        b = text.encode_batch(caps, 10)
        return model.score(model.encode_images(feats), model.encode_captions(b)).total


def test_roundtrip_identical_scores(tmp_path: Path) -> None:
    model, vocab = _model(smooth=5.0, step_weights=(1.0, 0.5, 2.0))
    out = save_checkpoint(tmp_path / "ck", model, vocab, extra={"epoch": 3, "p": Path("x")})
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "vocab.json"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format_version"] == 1 and cfg["model"]["embed_dim"] == 16
    assert cfg["extra"] == {"epoch": 3, "p": "x"}
    loaded = load_checkpoint(out)
    assert not loaded.model.training
    assert loaded.config.step_weights == (1.0, 0.5, 2.0) and loaded.config.smooth == 5.0
    assert loaded.text == vocab and loaded.extra["epoch"] == 3 and loaded.path == out
    feats = torch.randn(3, 5, 12)
    caps = [*CAPS, "zebra giraffe"]  # the last has no known word: all <unk>, still scores
    a, b = _scores(model, vocab, feats, caps), _scores(loaded.model, loaded.text, feats, caps)
    assert torch.equal(a, b)
    assert torch.isfinite(b[:, -1]).all()


@pytest.mark.parametrize("missing", ["model.safetensors", "config.json", "vocab.json"])
def test_missing_file(tmp_path: Path, missing: str) -> None:
    model, vocab = _model()
    out = save_checkpoint(tmp_path / "ck", model, vocab)
    (out / missing).unlink()
    with pytest.raises(CheckpointError, match=f"missing file: .*{missing}"):
        load_checkpoint(out)


def test_config_does_not_match_weights(tmp_path: Path) -> None:
    model, vocab = _model()
    out = save_checkpoint(tmp_path / "ck", model, vocab)
    cfg = json.loads((out / "config.json").read_text())
    cfg["model"]["img_dim"] = 20
    (out / "config.json").write_text(json.dumps(cfg))
    pattern = r"shape mismatch: img_enc\.\S+: checkpoint \(16, 12\)"
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(out)


def test_vocab_size_differs(tmp_path: Path) -> None:
    model, vocab = _model()
    out = save_checkpoint(tmp_path / "ck", model, vocab)
    Vocabulary([*vocab.itos[2:], "extra"]).save(out / "vocab.json")
    with pytest.raises(CheckpointError, match="vocab_size"):
        load_checkpoint(out)
    with pytest.raises(CheckpointError, match="vocab_size"):
        save_checkpoint(tmp_path / "ck2", model, Vocabulary(["a"]))


def test_corrupt_files(tmp_path: Path) -> None:
    model, vocab = _model()
    out = save_checkpoint(tmp_path / "ck", model, vocab)
    (out / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(out)
    out = save_checkpoint(tmp_path / "ck", model, vocab)
    (out / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(out)


def test_not_found_is_not_a_repo(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "a" / "b" / "c"))


def test_hub_repo_id_uses_snapshot_download(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    model, vocab = _model()
    local = save_checkpoint(tmp_path / "snap", model, vocab)
    calls = []

    def fake_snapshot_download(repo_id: str, **kwargs):
        calls.append(repo_id)
        return str(local)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.chdir(tmp_path)  # "someone/shan-demo" is not a local path here
    loaded = load_checkpoint("someone/shan-demo")
    assert calls == ["someone/shan-demo"] and loaded.path == local
    # an existing local directory that looks like owner/name is NOT downloaded
    (tmp_path / "owner").mkdir()
    save_checkpoint(tmp_path / "owner" / "name", model, vocab)
    load_checkpoint("owner/name")
    assert calls == ["someone/shan-demo"]

    def failing(repo_id: str, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    with pytest.raises(CheckpointError, match="could not be fetched.*offline"):
        load_checkpoint("someone/other")


def _tiny_bert(path: Path) -> Path:
    import inspect

    import transformers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "cube", "ball", "two"]
    if "vocab" in inspect.signature(transformers.BertTokenizer.__init__).parameters:
        tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    else:  # transformers 4.x
        (path.parent / "v.txt").write_text("\n".join(words) + "\n")
        tok = transformers.BertTokenizerFast(vocab_file=str(path.parent / "v.txt"))
    tok.save_pretrained(path)
    cfg = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(path)
    return path


def test_transformer_checkpoint_roundtrip(tmp_path: Path) -> None:
    from shan.model import SHAN

    bert = _tiny_bert(tmp_path / "bert")
    text = TransformerTextProcessor(bert, max_words=8)
    cfg = ModelConfig(img_dim=12, embed_dim=16, max_words=8)
    cfg.text_encoder, cfg.transformer_path = "transformer", str(bert)
    model = SHAN(cfg)
    with torch.no_grad():  # make sure fine-tuned backbone weights travel with the checkpoint
        for p in model.txt_enc.parameters():
            p.add_(0.01)
    out = save_checkpoint(tmp_path / "ck", model, text)
    assert json.loads((out / "vocab.json").read_text())["kind"] == "transformer"
    loaded = load_checkpoint(out)
    assert isinstance(loaded.text, TransformerTextProcessor)
    feats = torch.randn(2, 4, 12)
    caps = ["a red cube", "two ball", "", "zzz"]
    assert torch.equal(
        _scores(model, text, feats, caps), _scores(loaded.model, loaded.text, feats, caps)
    )
