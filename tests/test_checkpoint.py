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


# ---- issue 14.2: the checkpoint owns its detector; Hub conventions -----------------------------

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"


def _scene_regions(extractor):
    from tests.app_fixtures import scene

    return extractor.extract([scene(seed=0), scene(seed=3)])


def _bundle_scores(bundle, caps=("a red circle", "a blue square left of a green triangle")):
    """Scores of two scenes against ``caps`` through the bundle's extractor and model."""
    from shan.detect.base import stack_regions

    regions = _scene_regions(bundle.extractor)
    feats, mask, boxes = stack_regions(regions, with_boxes=True)  # read by geometry models only
    with torch.no_grad():
        img = bundle.model.encode_images(feats, mask, boxes)
        cap = bundle.model.encode_captions(bundle.text.encode_batch(list(caps), 16))
        return bundle.model.score(img, cap).total


def _fixture_root(tmp_path: Path) -> Path:
    """``root/shan`` (tiny SHAN linking ``../detector``) + ``root/detector`` (random toy)."""
    from tests.app_fixtures import make_fixture_app_checkpoint

    return make_fixture_app_checkpoint(tmp_path / "root").parent


@pytest.mark.skipif(not (SHIPPED / "shan" / "config.json").is_file(), reason="no shipped model")
def test_load_shipped_model_same_scores_as_the_parts() -> None:
    """``shan.load`` of the shipped folder or of its ``shan/`` gives exactly what loading the
    checkpoint and building its detector by hand gives (no behaviour change)."""
    import shan
    from shan.detect.factory import build_extractor

    by_hand = load_checkpoint(SHIPPED / "shan")
    extractor = build_extractor("toy", SHIPPED / "detector")
    from types import SimpleNamespace

    ref = _bundle_scores(
        SimpleNamespace(model=by_hand.model, text=by_hand.text, extractor=extractor)
    )
    for where in (SHIPPED, SHIPPED / "shan"):
        bundle = shan.load(where, device="cpu")
        assert bundle.detector.kind == "toy"
        assert bundle.detector.weights == (SHIPPED / "detector").resolve()
        assert bundle.checkpoint.path == SHIPPED / "shan"
        assert torch.equal(_bundle_scores(bundle), ref)


def test_save_pretrained_keeps_the_format_and_carries_the_detector(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard
    from safetensors.torch import load_file

    from shan.checkpoint import LoadedModel, load

    root = _fixture_root(tmp_path)
    src = load(root, device="cpu")
    out = tmp_path / "saved"
    src.checkpoint.save_pretrained(out)
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {
        "model.safetensors",
        "config.json",
        "vocab.json",
        "README.md",
        "detector/detector.safetensors",
        "detector/detector.json",
    }
    old = json.loads((root / "shan" / "config.json").read_text())
    new = json.loads((out / "config.json").read_text())
    assert set(new) == {"format_version", "model", "extra"}  # no field added by the mixin
    assert new["model"] == old["model"] and new["format_version"] == 1
    assert new["extra"]["detector"] == {"kind": "toy", "weights": "detector"}
    assert (out / "vocab.json").read_bytes() == (root / "shan" / "vocab.json").read_bytes()
    a, b = load_file(root / "shan" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("detector.safetensors", "detector.json"):
        assert (out / "detector" / name).read_bytes() == (root / "detector" / name).read_bytes()

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "shan" and card.data.license == "apache-2.0"
    assert {"image-text-matching", "model_hub_mixin"} <= set(card.data.tags)
    assert "| joint embedding size | 32 |" in card.text
    assert "kind `toy`, weights `detector`" in card.text and "`detector/`" in card.text

    again = LoadedModel.from_pretrained(out, device="cpu")
    assert isinstance(again, LoadedModel) and again.path == out
    moved = load(out, device="cpu")
    assert moved.detector.weights == (out / "detector").resolve()
    assert torch.equal(_bundle_scores(moved), _bundle_scores(src))


def test_save_pretrained_in_place_and_hub_links_are_kept(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    from shan.checkpoint import load

    root = _fixture_root(tmp_path)
    ck = load(root, device="cpu").checkpoint
    ck.save_pretrained(root / "shan")  # in place: the relative link still holds
    assert json.loads((root / "shan" / "config.json").read_text())["extra"]["detector"] == {
        "kind": "toy",
        "weights": "../detector",
    }
    assert not (root / "shan" / "detector").exists()

    ck.extra["detector"] = {"kind": "toy", "weights": "someone/toy-detector"}
    ck.save_pretrained(tmp_path / "linked")
    saved = json.loads((tmp_path / "linked" / "config.json").read_text())["extra"]["detector"]
    assert saved == {"kind": "toy", "weights": "someone/toy-detector"}
    assert not (tmp_path / "linked" / "detector").exists()

    calls = []

    def fake_snapshot_download(repo_id: str, **kwargs):
        calls.append((repo_id, kwargs))
        return str(root / "detector")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.chdir(tmp_path)
    bundle = load(tmp_path / "linked", device="cpu")
    assert calls == [("someone/toy-detector", {})]
    assert bundle.detector.weights == (root / "detector").resolve()


def test_hub_repo_in_the_shipped_layout_loads(tmp_path: Path, monkeypatch) -> None:
    """A Hub repo holding ``shan/`` + ``detector/`` (the ``checkpoints/`` folder as is)."""
    import huggingface_hub

    from shan.checkpoint import DetectorLinkError, load

    root = _fixture_root(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(root))
    monkeypatch.chdir(tmp_path)
    bundle = load("someone/shan-toy", device="cpu")
    assert bundle.checkpoint.path == root / "shan"
    assert bundle.detector.weights == (root / "detector").resolve()
    assert load_checkpoint("someone/shan-toy").path == root / "shan"

    # a downloaded checkpoint may not point at files outside its download
    cfg = json.loads((root / "shan" / "config.json").read_text())
    cfg["extra"]["detector"]["weights"] = "../../root/detector"
    (root / "shan" / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(
        huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(root / "shan")
    )
    with pytest.raises(DetectorLinkError, match="outside the downloaded checkpoint"):
        load("someone/shan-toy", device="cpu")


def test_detector_link_errors_say_what_is_missing(tmp_path: Path) -> None:
    from shan.checkpoint import DetectorLinkError, detector_link, load

    root = _fixture_root(tmp_path)
    cfg_path = root / "shan" / "config.json"
    cfg = json.loads(cfg_path.read_text())

    cfg["extra"] = {}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(DetectorLinkError, match="names no detector") as e:
        load(root, device="cpu")
    assert e.value.missing == "kind"
    with pytest.raises(DetectorLinkError, match="no weights for the 'toy'") as e:
        load(root, device="cpu", detector="toy")
    assert (e.value.missing, e.value.kind) == ("weights", "toy")
    bundle = load(root, device="cpu", detector="toy", detector_weights=root / "detector")
    assert bundle.detector.kind == "toy"

    cfg["extra"] = {"detector": {"kind": "yolo", "weights": "../detector"}}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(DetectorLinkError, match=r"config\.json: unknown detector kind 'yolo'"):
        load(root, device="cpu")
    cfg["extra"] = {"detector": detector_link("toy", "../nowhere")}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(DetectorLinkError, match="toy detector weights not found: ../nowhere"):
        load(root, device="cpu")
    cfg["extra"] = {"detector": detector_link("toy", "../shan")}  # a directory, not a detector
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(DetectorLinkError, match="could not load the toy detector"):
        load(root, device="cpu")
    with pytest.raises(CheckpointError, match="unknown detector kind"):
        detector_link("yolo", "x")
    with pytest.raises(DetectorLinkError, match="plain relative name"):
        detector_link("butd", "x", filename="../../etc/passwd")


def test_butd_link_finds_its_file_and_copies_it_with_the_vocabulary(
    tmp_path: Path, monkeypatch
) -> None:
    import huggingface_hub

    from shan.checkpoint import DetectorLinkError, detector_link, resolve_detector

    weights = tmp_path / "butd"
    weights.mkdir()
    (weights / "a.pth").write_bytes(b"a")
    (weights / "objects_vocab.txt").write_text("cat\n")
    (tmp_path / "ck").mkdir()
    ref = resolve_detector(detector_link("butd", "../butd"), tmp_path / "ck")
    assert ref.weights == (weights / "a.pth").resolve()
    (weights / "b.pkl").write_bytes(b"b")
    with pytest.raises(DetectorLinkError, match="2 BUTD weights files"):
        resolve_detector(detector_link("butd", str(weights)), tmp_path)
    ref = resolve_detector(detector_link("butd", str(weights), filename="b.pkl"), tmp_path)
    assert ref.weights == weights.resolve() / "b.pkl"

    seen = []

    def fake_snapshot_download(repo_id: str, **kwargs):
        seen.append((repo_id, kwargs))
        return str(weights)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    link = detector_link("butd", "someone/butd-weights", filename="a.pth")
    ref = resolve_detector(link, tmp_path, token="t", revision="v1")
    assert ref.weights == weights / "a.pth"
    # only that file and the vocabularies are fetched; the checkpoint's revision is not used
    assert seen == [("someone/butd-weights", {"token": "t", "allow_patterns": ["a.pth", "*.txt"]})]

    from shan.checkpoint import _copy_detector

    out = tmp_path / "saved"
    new = _copy_detector(detector_link("butd", str(weights), filename="b.pkl"), tmp_path, out)
    assert new == {"kind": "butd", "weights": "detector", "filename": "b.pkl"}
    assert sorted(p.name for p in (out / "detector").iterdir()) == ["b.pkl", "objects_vocab.txt"]


def test_looks_like_hub_id(tmp_path: Path) -> None:
    from shan.checkpoint import looks_like_hub_id

    (tmp_path / "runs").mkdir()
    assert looks_like_hub_id("owner/name", tmp_path)
    assert looks_like_hub_id("Org-1/model.v2", tmp_path)
    assert not looks_like_hub_id("runs/typo", tmp_path)  # a local folder: not found, no download
    for text in ("a/b/c", "./x", "/abs/path", "name", "../detector", "-x/y"):
        assert not looks_like_hub_id(text, tmp_path), text


def test_push_to_hub_then_load_from_the_hub(tmp_path: Path, monkeypatch) -> None:
    """``push_to_hub`` against a local fake Hub; the files it received, served back as the
    snapshot of that repo, load with ``shan.load`` and score identically."""
    import huggingface_hub
    from huggingface_hub import ModelCard, constants

    from shan.checkpoint import load
    from tests.fake_hub import FakeHub

    root = _fixture_root(tmp_path)
    src = load(root, device="cpu")
    with FakeHub("hf_test") as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the fake speaks git-LFS
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        src.checkpoint.push_to_hub("me/shan-tiny", token="hf_test")
        repo = hub.repo("me/shan-tiny", "model")
    assert set(repo.files) == {
        "README.md",
        "config.json",
        "model.safetensors",
        "vocab.json",
        "detector/detector.json",
        "detector/detector.safetensors",
    }
    assert repo.lfs_paths == {"model.safetensors", "detector/detector.safetensors"}
    card = ModelCard(repo.files["README.md"].decode())
    assert card.data.library_name == "shan" and 'shan.load("me/shan-tiny")' in card.text

    snap = tmp_path / "snapshot"
    for name, data in repo.files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(data)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(snap))
    monkeypatch.chdir(tmp_path)
    pulled = load("me/shan-tiny", device="cpu")
    assert pulled.detector.weights == (snap / "detector").resolve()
    assert torch.equal(_bundle_scores(pulled), _bundle_scores(src))


def test_butd_detector_named_by_a_checkpoint_loads(tmp_path: Path) -> None:
    """A checkpoint linking BUTD weights (random, reduced depth) beside their vocabularies."""
    from shan.checkpoint import DetectorLinkError, detector_link, load
    from shan.detect.butd import ButdExtractor
    from shan.detect.butd_weights import ButdArch, random_weights
    from tests.app_fixtures import make_checkpoint

    weights = tmp_path / "butd"
    weights.mkdir()
    arch = ButdArch(res4_blocks=1, num_classes=4, num_attributes=3)
    torch.save({"model": random_weights(arch, seed=1)}, weights / "small.pth")
    (weights / "objects_vocab.txt").write_text("cat\ndog\nbowl\n")
    (weights / "attributes_vocab.txt").write_text("black\nwhite\n")
    link = {"detector": detector_link("butd", "../butd")}
    make_checkpoint(tmp_path / "shan", img_dim=ButdExtractor.feature_dim, extra=link)
    bundle = load(tmp_path / "shan", device="cpu")
    assert isinstance(bundle.extractor, ButdExtractor)
    assert bundle.detector.weights == (weights / "small.pth").resolve()
    assert bundle.extractor.class_names == ["cat", "dog", "bowl"]

    make_checkpoint(tmp_path / "small", img_dim=16, extra=link)  # features do not fit the model
    with pytest.raises(DetectorLinkError, match=r"2048-d region features .* img_dim=16"):
        load(tmp_path / "small", device="cpu")


def test_from_pretrained_failures_are_checkpoint_errors(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    from shan.checkpoint import LoadedModel

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as tests/conftest.py sets it
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="someone/not-cached"):
        LoadedModel.from_pretrained("someone/not-cached")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        LoadedModel.from_pretrained(str(tmp_path / "no" / "such" / "dir"))


def test_checkpoint_owns_its_calibration(tmp_path: Path, caplog) -> None:
    """calibration.json is read with the checkpoint, carried by save_pretrained, and a broken one
    is ignored with a warning (the model still loads)."""
    from shan.calibration import calibrate_scores, save_calibration

    model, vocab = _model()
    out = save_checkpoint(tmp_path / "ck", model, vocab)
    assert load_checkpoint(out).calibration is None
    feats = torch.randn(4, 5, 12)
    caps = [CAPS[i % len(CAPS)] for i in range(20)]
    model.eval()
    with torch.no_grad():
        b = vocab.encode_batch(caps, 10)
        scores = model.score(model.encode_images(feats), model.encode_captions(b))
    save_calibration(calibrate_scores(scores), out)
    loaded = load_checkpoint(out)
    assert loaded.calibration is not None
    assert loaded.calibration.to_dict() == calibrate_scores(scores).to_dict()
    again = loaded.save_pretrained(tmp_path / "copy") or tmp_path / "copy"
    assert load_checkpoint(again).calibration.to_dict() == loaded.calibration.to_dict()
    (out / "calibration.json").write_text("{not json")
    with caplog.at_level("WARNING"):
        broken = load_checkpoint(out)
    assert broken.calibration is None and "calibration" in caplog.text
