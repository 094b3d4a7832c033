"""Hard negatives (``TrainConfig.hard_negatives``): the loss term, scoring each image against its
own negatives, the data path (typed and word-swap negatives), per-type accuracy, the switches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shan.config import ConfigError, ModelConfig, TrainConfig, from_dict, to_dict
from shan.data.precomp import (
    DataError,
    PrecompDataset,
    load_split_arrays,
    precomp_dir,
    swap_negatives,
    write_negatives,
    write_precomp,
)
from shan.data.vocab import Vocabulary
from shan.evaluation import negative_accuracy
from shan.model import SHAN, ContrastiveLoss, TrainingScores

CAPS = [
    "a red circle left of a blue star",
    "a blue star right of a red circle",
    "two red circles",
    "a man in a red shirt is sitting on a bench",
    "the small dog is under the large table",
]


# ------------------------------------------------------------------ loss


def test_hard_negative_hinge_by_hand() -> None:
    s = torch.tensor([[0.9, 0.1], [0.0, 0.5]])  # in-batch part: no violation (margin 0.2)
    neg = torch.tensor([[0.8, 0.95, 0.1], [0.6, 0.2, 0.0]])
    mask = torch.tensor([[True, False, True], [True, True, True]])
    loss = ContrastiveLoss(0.2, True, hard_negative_weight=2.0)
    # image 0: masked 0.95 ignored, hardest real 0.8 -> 0.2 + 0.8 - 0.9 = 0.1;
    # image 1: hardest 0.6 -> 0.2 + 0.6 - 0.5 = 0.3
    assert loss(s, neg, mask).item() == pytest.approx(2.0 * (0.1 + 0.3), abs=1e-6)
    assert loss(s).item() == pytest.approx(0.0)
    summed = ContrastiveLoss(0.2, False)(s, neg, mask)  # all violations: 0.1 + (0.3 + 0.0)
    assert summed.item() == pytest.approx(0.4, abs=1e-6)


def test_hard_negative_gradient_pushes_the_negative_down_and_the_positive_up() -> None:
    s = torch.tensor([[0.9, 0.1], [0.0, 0.5]], requires_grad=True)
    neg = torch.tensor([[0.8, 0.85], [0.6, 0.2]], requires_grad=True)
    mask = torch.tensor([[True, False], [True, True]])
    ContrastiveLoss(0.2, True)(s, neg, mask).backward()
    # gradient descent lowers a score with a positive gradient: the hardest real negative of each
    # image goes down, its matching pair goes up; a masked or easy negative gets nothing
    assert neg.grad.tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert s.grad[0, 0] < 0 and s.grad[1, 1] < 0


def test_hard_negative_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        ContrastiveLoss()(torch.eye(2), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="neg_mask"):
        ContrastiveLoss()(torch.eye(2), torch.zeros(2, 2), torch.ones(2, 3, dtype=torch.bool))


# ------------------------------------------------------------------ model


def _model(**kw) -> tuple[SHAN, Vocabulary]:
    vocab = Vocabulary.build(CAPS)
    cfg = ModelConfig(img_dim=12, embed_dim=32, vocab_size=len(vocab), word_dim=8, **kw)
    return SHAN(cfg).eval(), vocab


def test_score_own_equals_the_diagonal_blocks_of_all_pairs() -> None:
    model, vocab = _model()
    feats = torch.randn(3, 4, 12)
    negs = vocab.encode_batch([CAPS[i % 5] for i in range(6)])  # K = 2 per image
    with torch.no_grad():
        img = model.encode_images(feats)
        txt = model.encode_captions(negs)
        full = model.score(img, txt)
        own = model.score_own(img, txt, 2)
        for name in ("total", "l2l", "g2l", "g2g"):
            expect = getattr(full, name).view(3, 3, 2)[torch.arange(3), torch.arange(3)]
            assert torch.allclose(getattr(own, name), expect, atol=1e-5)
    with pytest.raises(ValueError, match="3 x 4 captions"):
        model.score_own(img, txt, 4)


def test_score_paired_chunks_give_the_same_scores_and_gradients() -> None:
    model, vocab = _model()
    model.train()
    feats = torch.randn(5, 4, 12)
    caps = vocab.encode_batch(CAPS)
    grads = []
    for chunk in (2, 100):
        model.zero_grad()
        img = model.encode_images(feats)
        s = model.score_paired(img, model.encode_captions(caps), pair_chunk=chunk)
        s.total.sum().backward()
        grads.append((s.total.detach(), model.fuse_img.linear.weight.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6) and grads[0][1].abs().sum() > 0


def test_forward_with_negatives_returns_batch_and_own_scores() -> None:
    model, vocab = _model()
    feats = torch.randn(2, 4, 12)
    pos = vocab.encode_batch(CAPS[:2])
    negs = vocab.encode_batch(CAPS[2:5] + CAPS[:1])
    out = model(feats, None, pos, negatives=negs.tokens, neg_lengths=negs.lengths)
    assert isinstance(out, TrainingScores)
    assert out.batch.total.shape == (2, 2) and out.negatives.total.shape == (2, 2)
    assert torch.allclose(out.batch.total, model(feats, None, pos.tokens, pos.lengths), atol=1e-6)
    steps = model(feats, None, pos, all_steps=True)
    assert steps.negatives is None and steps.batch.g2l.shape == (2, 2)
    with pytest.raises(ValueError, match="K captions per image"):
        model(feats, None, pos, negatives=negs.tokens[:3], neg_lengths=negs.lengths[:3])


# ------------------------------------------------------------------ data


@pytest.fixture()
def split(tmp_path: Path) -> Path:
    d = precomp_dir(tmp_path, "hn")
    rng = np.random.default_rng(0)
    write_precomp(d, "train", rng.normal(size=(2, 3, 12)).astype(np.float32), CAPS + CAPS)
    negs: list[list[dict[str, str]]] = [[] for _ in range(10)]
    negs[0] = [
        {"type": "relation_swap", "text": "a blue star left of a red circle"},
        {"type": "colour_swap", "text": "a blue circle left of a red star"},
        {"type": "count", "text": "a red circle left of two blue stars"},  # "stars": unknown
    ]
    negs[2] = [{"type": "count", "text": "a red circle"}]
    write_negatives(d, "train", negs)
    return tmp_path


def test_typed_negatives_reach_the_batch(split: Path) -> None:
    vocab = Vocabulary.build(CAPS)
    ds = PrecompDataset(split, "hn", "train", vocab, negatives="typed", negatives_per_caption=3)
    # the negative with a word the vocabulary does not know ("stars") is dropped
    assert [n["type"] for n in ds.negatives_of(0)] == ["relation_swap", "colour_swap"]
    batch = ds.collate([ds[0], ds[1], ds[2]])
    assert batch.negatives is not None and batch.negatives.tokens.shape[0] == 9
    assert batch.neg_mask.tolist() == [[True, True, False], [False] * 3, [True, False, False]]
    assert sorted(batch.neg_types[0][:2]) == ["colour_swap", "relation_swap"]
    texts = {" ".join(w) for w in batch.negatives.words[:2]}
    assert texts == {"a blue star left of a red circle", "a blue circle left of a red star"}
    only = PrecompDataset(split, "hn", "train", vocab, negatives="typed", negative_types=["count"])
    assert only[0].negatives == [] and only[2].negatives == ["a red circle"]
    # K = 1: one of the two, drawn at random at each access
    one = PrecompDataset(split, "hn", "train", vocab, negatives="typed")
    drawn = {one[0].negatives[0] for _ in range(40)}
    assert len(drawn) == 2


def test_typed_without_file_is_refused_and_auto_falls_back_to_swaps(tmp_path: Path) -> None:
    d = precomp_dir(tmp_path, "nf")
    write_precomp(d, "train", np.zeros((1, 2, 12), np.float32), CAPS)
    vocab = Vocabulary.build(CAPS)
    with pytest.raises(DataError, match="train_negs.jsonl not found"):
        PrecompDataset(tmp_path, "nf", "train", vocab, negatives="typed")
    auto = PrecompDataset(tmp_path, "nf", "train", vocab, negatives="auto")
    assert auto.negatives == "swap"
    with pytest.raises(DataError, match="negatives must be one of"):
        PrecompDataset(tmp_path, "nf", "train", vocab, negatives="random")


def test_swap_negatives_for_real_captions() -> None:
    caption = "A man in a red shirt is sitting on a bench next to a small dog."
    negs = swap_negatives(caption, seed=3)
    assert negs and all(n["text"].lower() != caption.lower() for n in negs)
    kinds = {n["type"] for n in negs}
    assert {"colour_swap", "size_swap"} <= kinds
    assert swap_negatives(caption, seed=3) == negs  # deterministic
    assert swap_negatives("", seed=0) == [] and swap_negatives("!!!", seed=0) == []


def test_swap_dataset_on_flickr_like_captions(tmp_path: Path) -> None:
    caps = [
        "Two young men are playing football on a green field .",
        "A black dog jumps over a small white fence .",
        "A woman in a blue dress stands next to a large red car .",
        "Three children sit on a wooden bench .",
        "A little girl is climbing into a wooden playhouse .",
    ]
    d = precomp_dir(tmp_path, "f")
    write_precomp(d, "train", np.zeros((1, 2, 12), np.float32), caps)
    vocab = Vocabulary.build(caps)
    ds = PrecompDataset(tmp_path, "f", "train", vocab, negatives="swap", negatives_per_caption=2)
    batch = ds.collate([ds[i] for i in range(5)])
    assert batch.neg_mask.any(1).sum() >= 3  # most captions give a swap negative
    for b in range(5):
        for k in range(2):
            if batch.neg_mask[b, k]:
                neg = batch.negatives.words[2 * b + k]
                assert neg != batch.text.words[b] and sorted(neg) != [] and "<unk>" not in neg


# ------------------------------------------------------------------ evaluation


def test_negative_accuracy_per_type_and_step(split: Path) -> None:
    model, vocab = _model(use_g2l=False)
    arrays = load_split_arrays(split, "hn", "train")
    negs = [[] for _ in range(10)]
    negs[0] = [{"type": "same", "text": CAPS[0]}, {"type": "other", "text": "a man"}]
    negs[7] = [{"type": "other", "text": "two red circles"}]
    res = negative_accuracy(model, vocab, arrays, negs)
    assert res["per_type"]["same"]["n"] == 1 and res["per_type"]["other"]["n"] == 2
    assert res["per_type"]["same"]["total"] == 0.0  # a tie is not a win
    assert np.isnan(res["per_type"]["other"]["g2l"])  # a step the model does not use
    assert res["all"]["n"] == 3 and res["steps"] == ["total", "l2l", "g2g"]


# ------------------------------------------------------------------ config


def test_train_switches_default_off_and_round_trip() -> None:
    cfg = TrainConfig()
    assert cfg.hard_negatives == "none" and cfg.step_loss_weight == 0 and cfg.pool_lr_scale == 1
    data = to_dict(
        TrainConfig(
            hard_negatives="typed",
            negatives_per_caption=3,
            hard_negative_weight=0.5,
            hard_negative_types="relation_swap,count",
            step_loss_weight=0.25,
            pool_lr_scale=20.0,
        )
    )
    back = from_dict(TrainConfig, data)
    assert to_dict(back) == data


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("hard_negatives", "sometimes", "hard_negatives must be one of"),
        ("hard_negatives", None, "hard_negatives must be one of"),
        ("negatives_per_caption", 0, "negatives_per_caption must be an integer"),
        ("negatives_per_caption", 1000, "negatives_per_caption must be an integer"),
        ("hard_negative_weight", -1.0, "hard_negative_weight must be a finite number"),
        ("hard_negative_types", "count,,", "hard_negative_types must be comma-separated"),
        ("hard_negative_types", 3, "hard_negative_types must be a string"),
        ("step_loss_weight", float("nan"), "step_loss_weight must be a finite number"),
        ("pool_lr_scale", 0.0, "pool_lr_scale must be a finite number"),
    ],
)
def test_train_switches_are_validated(field, value, message) -> None:
    data = to_dict(TrainConfig())
    data[field] = value
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, data)


def test_none_is_a_value_of_hard_negatives_on_the_command_line() -> None:
    from shan.config import apply_overrides

    cfg = apply_overrides(TrainConfig(hard_negatives="typed"), {"hard_negatives": "none"})
    assert cfg.hard_negatives == "none"
    assert apply_overrides(TrainConfig(), {"resume": "none"}).resume is None
