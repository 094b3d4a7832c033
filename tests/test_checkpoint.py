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


# ---- issue 9, finding 3: config values checked before anything is allocated -------------------


def _with_config(tmp_path: Path, **changes) -> Path:
    model, vocab = _model()
    out = save_checkpoint(tmp_path / "ck", model, vocab)
    cfg = json.loads((out / "config.json").read_text())
    cfg["model"].update(changes)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("embed_dim", -3, r"ModelConfig\.embed_dim must be an integer in \[1, 16384\], got -3"),
        ("embed_dim", "16", r"embed_dim must be an integer .* got '16' \(str\)"),
        ("embed_dim", 16.0, r"embed_dim must be an integer .* got 16\.0 \(float\)"),
        ("embed_dim", None, r"embed_dim must be an integer .* got None"),
        ("img_dim", 10**9, r"img_dim must be an integer in \[1, 16384\]"),
        ("vocab_size", 10**9, r"vocab_size must be an integer"),
        ("max_words", 0, r"max_words must be an integer in \[1, 1024\]"),
        ("gru_layers", True, r"gru_layers must be an integer .* got True \(bool\)"),
        ("smooth", float("nan"), r"smooth must be a finite number in \(0\.0, 1000\.0\], got nan"),
        ("smooth", float("inf"), r"smooth must be a finite number"),
        ("smooth", 0, r"smooth must be a finite number"),
        ("mu", float("-inf"), r"mu must be a finite number in \[0\.0, 1\.0\]"),
        ("mu", 2.5, r"mu must be a finite number in \[0\.0, 1\.0\], got 2\.5"),
        ("use_l2l", "no", r"use_l2l must be true or false \(a JSON boolean\), got 'no'"),
        ("use_g2g", 1, r"use_g2g must be true or false"),
        ("step_weights", [1, "x", 1], r"step_weights must be three finite numbers"),
        ("step_weights", [1, float("nan"), 1], r"step_weights must be three finite numbers"),
        ("text_encoder", "lstm", r"text_encoder must be one of 'gru', 'transformer'"),
    ],
)
def test_bad_config_values_are_named(tmp_path: Path, monkeypatch, field, value, message) -> None:
    import safetensors.torch

    def no_load(*args, **kwargs):
        raise AssertionError("weights were loaded for a config that cannot be used")

    monkeypatch.setattr(safetensors.torch, "load_file", no_load)
    ck = _with_config(tmp_path, **{field: value})
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(ck)


def test_all_steps_off_is_refused(tmp_path: Path) -> None:
    ck = _with_config(tmp_path, use_l2l=False, use_g2l=False, use_g2g=False)
    with pytest.raises(CheckpointError, match="all false"):
        load_checkpoint(ck)


@pytest.mark.parametrize("field, value", [("embed_dim", 8000), ("img_dim", 4000), ("word_dim", 9)])
def test_sizes_compared_with_the_header_before_allocating(
    tmp_path: Path, monkeypatch, field, value
):
    """A size within bounds that does not fit the weights is refused from the safetensors header
    alone: no tensor is read and the model is never built for real (only on the meta device)."""
    import safetensors.torch

    import shan.model.shan as shan_module

    real_init = shan_module.SHAN.__init__
    built_for_real = []

    def spy_init(self, cfg, *args, **kwargs):
        if torch.empty(0).device.type != "meta":
            built_for_real.append(cfg)
        real_init(self, cfg, *args, **kwargs)

    monkeypatch.setattr(shan_module.SHAN, "__init__", spy_init)
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: 1 / 0)
    ck = _with_config(tmp_path, **{field: value})
    built_for_real.clear()  # _with_config built the model that was saved
    with pytest.raises(CheckpointError, match=rf"config field {field}={value} does not fit"):
        load_checkpoint(ck)
    assert built_for_real == []


def test_shipped_embed_dim_8000_does_not_allocate(tmp_path: Path) -> None:
    """The probe's case: the shipped weights with embed_dim 8000 allocated 3.4 GB before
    'shape mismatch'. Now the refusal costs (almost) no memory."""
    import resource
    import shutil

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "shan"
    if not (shipped / "config.json").is_file():
        pytest.skip("no shipped checkpoint")
    ck = tmp_path / "ck"
    shutil.copytree(shipped, ck)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["model"]["embed_dim"] = 8000
    (ck / "config.json").write_text(json.dumps(cfg))
    load_checkpoint(shipped)  # warm up imports so the peak below is the refusal's own
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="embed_dim=8000 does not fit"):
        load_checkpoint(ck)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200
