"""Region geometry (``ModelConfig.use_geometry``): box normalisation, what moves a score and what
does not, the paper's model unchanged, checkpoints, and clear errors for missing boxes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shan.checkpoint import load_checkpoint, read_config, save_checkpoint
from shan.config import ConfigError, ModelConfig, from_dict, to_dict
from shan.data.precomp import DataError, PrecompDataset, load_split_arrays, write_precomp
from shan.data.vocab import Vocabulary
from shan.detect.base import Regions, stack_regions
from shan.evaluation import EvaluationError, compute_sims, evaluate_arrays, score_pairs
from shan.model import SHAN
from shan.model.alignment import align_pair
from shan.model.encoders import BoxError, box_features, normalize_boxes

VOCAB = ["<pad>", "<unk>", "a", "red", "circle", "left", "of", "blue", "star"]


def geo_cfg(**kw) -> ModelConfig:
    base = dict(img_dim=12, embed_dim=32, vocab_size=len(VOCAB), word_dim=8, use_geometry=True)
    base.update(kw)
    return ModelConfig(**base)


def inputs(n_img: int = 2, k: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = 30 * torch.randn(n_img, k, 12, generator=g)  # detector-like norms (~100)
    mask = torch.ones(n_img, k, dtype=torch.bool)
    mask[1, 2:] = False
    xy = torch.rand(n_img, k, 2, generator=g) * 0.6
    boxes = torch.cat([xy, xy + 0.2 + 0.2 * torch.rand(n_img, k, 2, generator=g)], -1)
    tokens = torch.tensor([[2, 3, 4, 5, 6, 2, 7, 8], [2, 7, 8, 5, 6, 2, 3, 4]])
    lengths = torch.tensor([8, 8])
    return feats, mask, boxes, tokens, lengths


def scores(model: SHAN, feats, mask, boxes, tokens, lengths) -> torch.Tensor:
    with torch.no_grad():
        img = model.encode_images(feats, mask, boxes)
        return model.score(img, model.encode_captions(tokens, lengths)).total


# ------------------------------------------------------------------ boxes


def test_normalize_boxes_divides_by_width_and_height_and_clamps() -> None:
    boxes = torch.tensor([[[10.0, 20.0, 50.0, 80.0], [-5.0, 0.0, 250.0, 120.0]]])
    out = normalize_boxes(boxes, torch.tensor([[200.0, 100.0]]))
    assert torch.allclose(out[0, 0], torch.tensor([0.05, 0.2, 0.25, 0.8]))
    assert out[0, 1].tolist() == [0.0, 0.0, 1.0, 1.0]  # clamped to the image
    single = normalize_boxes(np.array([[0, 0, 100, 50]]), (200, 100))  # (k, 4) with (2,)
    assert single.tolist() == [[0.0, 0.0, 0.5, 0.5]]


@pytest.mark.parametrize(
    "boxes, sizes, message",
    [
        (torch.zeros(1, 2, 3), torch.ones(1, 2), "must be"),
        (torch.zeros(2, 2, 4), torch.ones(1, 2), "image sizes must be"),
        (torch.full((1, 2, 4), float("nan")), torch.ones(1, 2), "NaN"),
        (torch.zeros(1, 2, 4), torch.tensor([[0.0, 10.0]]), "positive"),
    ],
)
def test_normalize_boxes_refuses_bad_input(boxes, sizes, message) -> None:
    with pytest.raises(BoxError, match=message):
        normalize_boxes(boxes, sizes)


def test_box_features_sort_corners_and_give_the_area() -> None:
    f = box_features(torch.tensor([[0.5, 0.6, 0.1, 0.2]]))
    assert torch.allclose(f, torch.tensor([[0.1, 0.2, 0.5, 0.6, 0.16]]))


def test_stack_regions_gives_normalised_boxes_with_zero_padding() -> None:
    def regs(n: int, size: tuple[int, int]) -> Regions:
        return Regions(
            boxes=torch.tensor([[0.0, 0.0, size[0] / 2, size[1] / 4]] * n),
            features=torch.ones(n, 3),
            scores=torch.ones(n),
            labels=["x"] * n,
            attributes=["y"] * n,
            attribute_scores=torch.ones(n),
            image_size=size,
        )

    feats, mask, boxes = stack_regions([regs(2, (200, 100)), regs(1, (40, 80))], with_boxes=True)
    assert boxes.shape == (2, 2, 4) and mask.tolist() == [[True, True], [True, False]]
    assert boxes[0, 1].tolist() == [0.0, 0.0, 0.5, 0.25]
    assert boxes[1, 0].tolist() == [0.0, 0.0, 0.5, 0.25]
    assert boxes[1, 1].abs().sum() == 0
    assert len(stack_regions([regs(1, (10, 10))])) == 2  # the default call is unchanged
    with pytest.raises(BoxError, match="width and height"):
        stack_regions([regs(1, (0, 0))], with_boxes=True)


# ------------------------------------------------------------------ the model


def test_moving_a_box_changes_the_scores() -> None:
    model = SHAN(geo_cfg()).eval()
    feats, mask, boxes, tokens, lengths = inputs()
    before = scores(model, feats, mask, boxes, tokens, lengths)
    moved = boxes.clone()
    moved[0, 0] = torch.tensor([0.7, 0.7, 0.95, 0.95])
    after = scores(model, feats, mask, moved, tokens, lengths)
    assert (after[0] - before[0]).abs().max() > 1e-3  # image 0's scores move
    assert torch.equal(after[1], before[1])  # image 1 untouched


def test_padding_boxes_never_change_a_score() -> None:
    model = SHAN(geo_cfg()).eval()
    feats, mask, boxes, tokens, lengths = inputs()
    before = scores(model, feats, mask, boxes, tokens, lengths)
    junk = boxes.clone()
    junk[1, 2:] = torch.tensor([float("nan"), 5.0, -3.0, float("inf")])  # padded regions only
    assert torch.equal(scores(model, feats, mask, junk, tokens, lengths), before)
    # and padding the image with extra regions (any box) gives the same scores too
    wide_f = torch.cat([feats, torch.randn(2, 3, 12)], 1)
    wide_m = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], 1)
    wide_b = torch.cat([boxes, torch.rand(2, 3, 4)], 1)
    assert torch.allclose(scores(model, wide_f, wide_m, wide_b, tokens, lengths), before, atol=1e-6)


def test_geometry_part_keeps_its_share_whatever_the_feature_norm() -> None:
    """The geometry term is tied to the appearance term by construction: scaling the detector's
    features by 1000 changes nothing (both parts are unit vectors before the mix)."""
    model = SHAN(geo_cfg()).eval()
    feats, mask, boxes, _, _ = inputs()
    enc = model.img_enc
    with torch.no_grad():
        enc.fc.bias.zero_()  # a bias-free projection is scale-invariant after normalising
        a = model.encode_images(feats, mask, boxes).regions
        b = model.encode_images(1000 * feats, mask, boxes).regions
        assert torch.allclose(a, b, atol=1e-5)
        appearance = F.normalize(enc.fc(feats), dim=-1)
        geometry = enc.geometry(boxes)
        expected = F.normalize(appearance + enc.geometry_weight * geometry, dim=-1)
        assert torch.allclose(a[0], expected[0], atol=1e-6)
        # the mix weight is learned: its gradient is not zero
    enc.log_geometry_weight.grad = None
    model.encode_images(feats, mask, boxes).regions.pow(3).sum().backward()
    assert float(enc.log_geometry_weight.grad.abs()) > 0


def test_relative_geometry_is_centred_with_unit_rms_per_image() -> None:
    from shan.model.encoders import GeometryEncoder

    enc = GeometryEncoder(32, 16, "relative")
    _, mask, boxes, _, _ = inputs()
    boxes[:, :, 2:] = boxes[:, :, :2] + 0.1  # spread-out boxes of one size

    def rms2(g: torch.Tensor, i: int) -> float:
        return float(g[i, mask[i]].pow(2).sum(-1).mean())

    with torch.no_grad():
        before = enc(boxes, mask)
        for w in enc.mlp[2].parameters():
            w.mul_(0.3)  # the raw differences shrink 3x (squared: 11x) ...
        after = enc(boxes, mask)
    for i in range(2):
        real = after[i, mask[i]]
        assert torch.allclose(real.mean(0), torch.zeros(32), atol=1e-5)  # centred
        assert 0.9 < rms2(before, i) <= 1.0
        assert rms2(after, i) > 0.6  # ... the normalised ones barely
    assert after[1, ~mask[1]].abs().sum() == 0
    one = enc(boxes[:, :1], mask[:, :1])  # a single region: nothing to tell apart
    assert one.abs().max() == 0
    absolute = GeometryEncoder(32, 16, "absolute")(boxes, mask)
    assert torch.allclose(absolute.norm(dim=-1), mask.float())  # unit rows, padding zero


def test_single_region_image_scores_as_without_geometry() -> None:
    model = SHAN(geo_cfg()).eval()
    feats, _, boxes, _, _ = inputs()
    with torch.no_grad():
        v = model.encode_images(feats[:, :1], None, boxes[:, :1]).regions
        expected = F.normalize(model.img_enc.fc(feats[:, :1]), dim=-1)
    assert torch.allclose(v, expected, atol=1e-6)


def test_geometry_model_needs_boxes_and_others_ignore_them() -> None:
    feats, mask, boxes, tokens, lengths = inputs()
    model = SHAN(geo_cfg()).eval()
    with pytest.raises(BoxError, match="use_geometry"):
        model.encode_images(feats, mask)
    with pytest.raises(BoxError, match=r"\(2, 4, 4\)"):
        model.encode_images(feats, mask, boxes[:, :3])
    plain = SHAN(geo_cfg(use_geometry=False)).eval()
    assert not any("geometry" in k for k in plain.state_dict())
    assert torch.equal(
        scores(plain, feats, mask, boxes, tokens, lengths),
        scores(plain, feats, mask, None, tokens, lengths),
    )


def test_explain_and_forward_take_boxes() -> None:
    model = SHAN(geo_cfg()).eval()
    feats, mask, boxes, tokens, lengths = inputs()
    ex = model.explain(feats[0], mask[0], tokens[0], 8, boxes=boxes[0])
    total = scores(model, feats, mask, boxes, tokens, lengths)
    assert abs(ex.scores["total"] - float(total[0, 0])) < 1e-4
    with torch.no_grad():
        fwd = model(feats, mask, tokens, lengths, boxes=boxes)
    assert torch.allclose(fwd, total, atol=1e-5)


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_saved_before_geometry_scores_as_the_paper_model(tmp_path: Path) -> None:
    """A checkpoint whose config predates the geometry fields loads with geometry off and scores
    exactly what the paper's encoder ``normalize(W f + b)`` + the reference steps give."""
    import json

    paper = SHAN(dataclasses.replace(geo_cfg(), use_geometry=False)).eval()
    ck = save_checkpoint(tmp_path / "old", paper, Vocabulary(VOCAB[2:]))
    cfg_path = Path(ck) / "config.json"
    data = json.loads(cfg_path.read_text())
    for key in [k for k in data["model"] if k.startswith("geometry") or k == "use_geometry"]:
        del data["model"][key]  # as written before the switch existed
    cfg_path.write_text(json.dumps(data))
    loaded = load_checkpoint(ck)
    model = loaded.model
    assert loaded.config.use_geometry is False
    g = torch.Generator().manual_seed(1)
    feats = 30 * torch.randn(2, 5, loaded.config.img_dim, generator=g)
    mask = torch.ones(2, 5, dtype=torch.bool)
    batch = loaded.text.encode_batch([" ".join(VOCAB[2:6])], 64)
    with torch.no_grad():
        img = model.encode_images(feats, mask, torch.rand(2, 5, 4))  # boxes ignored
        txt = model.encode_captions(batch)
        total = model.score(img, txt).total
        fc = model.img_enc.fc
        v = F.normalize(feats @ fc.weight.T + fc.bias, dim=-1)
        assert torch.allclose(img.regions, v, atol=1e-6)
        for i in range(2):
            r = align_pair(v[i], txt.words[0], mask[i], txt.mask[0], model.params)
            ref = r["s_l2l"] + r["s_g2l"] + r["s_g2g"]
            assert abs(float(ref) - float(total[i, 0])) < 1e-5


def test_geometry_config_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    model = SHAN(geo_cfg(geometry_hidden=16, geometry_weight=0.5, geometry_mode="absolute")).eval()
    with torch.no_grad():
        model.img_enc.log_geometry_weight.fill_(0.3)
    save_checkpoint(tmp_path / "ck", model, Vocabulary(VOCAB[2:]))
    cfg, _ = read_config(tmp_path / "ck")
    assert (cfg.use_geometry, cfg.geometry_hidden, cfg.geometry_weight) == (True, 16, 0.5)
    assert cfg.geometry_mode == "absolute"
    loaded = load_checkpoint(tmp_path / "ck").model
    feats, mask, boxes, tokens, lengths = inputs()
    assert torch.equal(
        scores(loaded, feats, mask, boxes, tokens, lengths),
        scores(model, feats, mask, boxes, tokens, lengths),
    )
    assert abs(loaded.img_enc.geometry_weight - float(torch.tensor(0.3).exp())) < 1e-6


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("use_geometry", "yes", "use_geometry must be true or false"),
        ("geometry_hidden", 0, "geometry_hidden must be an integer"),
        ("geometry_hidden", 10**6, "geometry_hidden must be an integer"),
        ("geometry_weight", 0.0, "geometry_weight must be a finite number"),
        ("geometry_weight", float("inf"), "geometry_weight must be a finite number"),
        ("geometry_mode", "polar", "geometry_mode must be one of 'relative', 'absolute'"),
    ],
)
def test_geometry_fields_are_validated(field, value, message) -> None:
    data = to_dict(geo_cfg())
    data[field] = value
    with pytest.raises(ConfigError, match=message):
        from_dict(ModelConfig, data)


# ------------------------------------------------------------------ data and evaluation


def _split(root: Path, with_boxes: bool = True, with_sizes: bool = True) -> Path:
    rng = np.random.default_rng(0)
    d = root / "g_precomp"
    n, k = 4, 3
    boxes = np.tile(np.array([10.0, 20.0, 60.0, 40.0], np.float32), (n, k, 1))
    boxes[:, 1] += 30
    write_precomp(
        d,
        "test",
        rng.normal(size=(n, k, 12)).astype(np.float32),
        ["a red circle left of a blue star"] * (5 * n),
        boxes=boxes if with_boxes else None,
        nregions=np.array([3, 2, 3, 1]),
        sizes=np.tile([200, 100], (n, 1)) if with_sizes else None,
    )
    return d


def test_dataset_and_evaluation_read_normalised_boxes(tmp_path: Path) -> None:
    _split(tmp_path)
    vocab = Vocabulary(VOCAB[2:])
    ds = PrecompDataset(tmp_path, "g", "test", vocab, boxes=True)
    item = ds[5]
    assert item.boxes.tolist()[0] == pytest.approx([0.05, 0.2, 0.3, 0.4])
    assert ds.collate([ds[0], ds[6]]).boxes.shape == (2, 3, 4)
    plain = PrecompDataset(tmp_path, "g", "test", vocab)
    assert plain[0].boxes is None and plain.collate([plain[0]]).boxes is None

    model = SHAN(geo_cfg(vocab_size=len(vocab))).eval()
    arrays = load_split_arrays(tmp_path, "g", "test")
    boxes = arrays.normalized_boxes()
    res = evaluate_arrays(model, vocab, arrays)
    batch = vocab.encode_batch(arrays.captions, 64)
    sims = compute_sims(model, arrays.feats, arrays.masks, batch, boxes=boxes)
    assert res["all"]["rsum"] >= 0 and sims.shape == (4, 20)
    # score_pairs gives the same numbers as the all-pairs matrix
    feats, masks = arrays.feats, arrays.masks
    pairs = score_pairs(model, vocab, feats, masks, [3, 0, 3], ["a red star"] * 3, boxes)
    full = compute_sims(model, feats, masks, vocab.encode_batch(["a red star"]), boxes=boxes)
    assert np.allclose(pairs["total"], full[[3, 0, 3], 0], atol=1e-5)
    with pytest.raises(EvaluationError, match="no boxes"):
        compute_sims(model, arrays.feats, arrays.masks, batch)


@pytest.mark.parametrize("boxes, sizes, missing", [(False, True, "boxes"), (True, False, "sizes")])
def test_geometry_on_data_without_boxes_is_a_clear_error(tmp_path: Path, boxes, sizes, missing):
    _split(tmp_path, with_boxes=boxes, with_sizes=sizes)
    vocab = Vocabulary(VOCAB[2:])
    with pytest.raises(DataError, match=f"no test_{missing}.npy.*use_geometry"):
        PrecompDataset(tmp_path, "g", "test", vocab, boxes=True)
    model = SHAN(geo_cfg(vocab_size=len(vocab))).eval()
    with pytest.raises(DataError, match="use_geometry"):
        evaluate_arrays(model, vocab, load_split_arrays(tmp_path, "g", "test"))


def test_geometry_default_is_off() -> None:
    cfg = ModelConfig()
    assert cfg.use_geometry is False
    assert dataclasses.asdict(cfg)["geometry_weight"] == 0.3
