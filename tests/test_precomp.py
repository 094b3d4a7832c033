"""SCAN-format reader/writer: shapes, masks, validation errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from shan.data.precomp import (
    DataError,
    PrecompDataset,
    SplitWriter,
    load_split_arrays,
    load_split_dir,
    precomp_dir,
    read_negatives,
    read_regions,
    write_negatives,
    write_precomp,
)
from shan.data.vocab import Vocabulary


def _caps(n: int) -> list[str]:
    return [f"image {i} caption {j}" for i in range(n) for j in range(5)]


@pytest.fixture()
def root(tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(4, 3, 8)).astype(np.float32)
    boxes = rng.uniform(0, 10, size=(4, 3, 4)).astype(np.float32)
    write_precomp(
        precomp_dir(tmp_path, "toy"),
        "train",
        feats,
        _caps(4),
        boxes=boxes,
        nregions=[3, 2, 1, 3],
        ids=["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
    )
    return tmp_path


def test_roundtrip_and_masks(root) -> None:
    arr = load_split_arrays(root, "toy", "train", img_dim=8)
    assert arr.feats.shape == (4, 3, 8) and isinstance(arr.feats, np.memmap)
    assert arr.masks.tolist()[1] == [True, True, False]
    assert arr.masks.tolist()[2] == [True, False, False]
    assert arr.captions[7] == "image 1 caption 2"
    assert arr.ids == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"] and arr.boxes.shape == (4, 3, 4)
    sub = arr.subset(1, 3)
    assert sub.n_images == 2 and sub.captions[0] == "image 1 caption 0" and len(sub.captions) == 10
    assert load_split_arrays(root, "toy", "train", max_images=2).n_images == 2


def test_dataset_items_and_collate(root) -> None:
    vocab = Vocabulary.build(_caps(4))
    ds = PrecompDataset(root, "toy", "train", vocab, max_words=3, img_dim=8)
    assert len(ds) == 20
    it = ds[12]
    assert it.image_index == 2 and it.caption_index == 12 and it.caption == "image 2 caption 2"
    assert it.mask.tolist() == [True, False, False] and it.features.dtype == torch.float32
    raw = np.load(precomp_dir(root, "toy") / "train_ims.npy")
    assert torch.equal(it.features, torch.from_numpy(raw[2]))
    dl = DataLoader(ds, batch_size=6, shuffle=False, collate_fn=ds.collate)
    batch = next(iter(dl))
    assert batch.feats.shape == (6, 3, 8) and batch.masks.shape == (6, 3)
    assert batch.text.tokens.shape == (6, 3) and all(batch.text.truncated)
    assert batch.image_index.tolist() == [0, 0, 0, 0, 0, 1]
    with pytest.raises(IndexError):
        ds[20]
    # pickles without the memory map (DataLoader workers re-open it)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[5].features, ds[5].features)


def test_missing_dir_and_split(tmp_path, root) -> None:
    with pytest.raises(DataError, match="dataset directory not found"):
        load_split_arrays(tmp_path, "nope", "train")
    with pytest.raises(DataError, match="splits present in .*: train"):
        load_split_arrays(root, "toy", "test")


def test_wrong_ndim(tmp_path) -> None:
    d = precomp_dir(tmp_path, "x")
    d.mkdir()
    np.save(d / "train_ims.npy", np.zeros((2, 8), np.float32))
    (d / "train_caps.txt").write_text("a\n" * 10)
    with pytest.raises(DataError, match="3-d"):
        load_split_arrays(tmp_path, "x", "train")


def test_caption_count_mismatch(tmp_path) -> None:
    d = precomp_dir(tmp_path, "x")
    d.mkdir()
    np.save(d / "train_ims.npy", np.zeros((2, 3, 8), np.float32))
    (d / "train_caps.txt").write_text("a\n" * 9)
    with pytest.raises(DataError, match="9 captions for 2 images"):
        load_split_arrays(tmp_path, "x", "train")
    with pytest.raises(DataError, match="expected 10"):
        write_precomp(d, "train", np.zeros((2, 3, 8)), ["a"] * 9)


def test_missing_captions(tmp_path) -> None:
    d = precomp_dir(tmp_path, "x")
    d.mkdir()
    np.save(d / "train_ims.npy", np.zeros((2, 3, 8), np.float32))
    with pytest.raises(DataError, match="missing file: .*train_caps.txt"):
        load_split_arrays(tmp_path, "x", "train")


def test_bad_utf8_captions(tmp_path) -> None:
    d = precomp_dir(tmp_path, "x")
    d.mkdir()
    np.save(d / "train_ims.npy", np.zeros((1, 3, 8), np.float32))
    (d / "train_caps.txt").write_bytes(b"a\nb\n\xff\nd\ne\n")
    with pytest.raises(DataError, match="line 3 is not valid UTF-8"):
        load_split_arrays(tmp_path, "x", "train")


def test_not_npy(tmp_path) -> None:
    d = precomp_dir(tmp_path, "x")
    d.mkdir()
    (d / "train_ims.npy").write_text("garbage")
    with pytest.raises(DataError, match="cannot read"):
        load_split_arrays(tmp_path, "x", "train")


@pytest.mark.parametrize("nreg", [[0, 3], [3, 4]])
def test_nregions_out_of_range(tmp_path, nreg) -> None:
    with pytest.raises(DataError, match="outside \\[1, 3\\]"):
        write_precomp(
            precomp_dir(tmp_path, "x"), "train", np.zeros((2, 3, 8)), ["c"] * 10, nregions=nreg
        )


def test_empty_split(tmp_path) -> None:
    d = precomp_dir(tmp_path, "x")
    d.mkdir()
    np.save(d / "train_ims.npy", np.zeros((0, 3, 8), np.float32))
    (d / "train_caps.txt").write_text("")
    with pytest.raises(DataError, match="empty split"):
        load_split_arrays(tmp_path, "x", "train")


def test_feature_dim_mismatch(root) -> None:
    with pytest.raises(DataError, match="size 8 but the model expects img_dim=2048"):
        load_split_arrays(root, "toy", "train", img_dim=2048)
    with pytest.raises(DataError, match="img_dim=16"):
        PrecompDataset(root, "toy", "train", Vocabulary(), img_dim=16)


def test_bad_boxes_and_ids(tmp_path) -> None:
    with pytest.raises(DataError, match="boxes"):
        write_precomp(
            tmp_path / "x_precomp", "t", np.zeros((1, 3, 8)), ["c"] * 5, boxes=np.zeros((1, 2, 4))
        )
    d = precomp_dir(tmp_path, "y")
    write_precomp(d, "t", np.zeros((1, 3, 8)), ["c"] * 5)
    (d / "t_ids.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="2 ids for 1 images"):
        load_split_arrays(tmp_path, "y", "t")


def test_caption_newlines_and_trailing_line(tmp_path) -> None:
    d = precomp_dir(tmp_path, "x")
    write_precomp(d, "t", np.zeros((1, 2, 4)), ["a\nb", "c", "d", "e", ""])
    arr = load_split_arrays(tmp_path, "x", "t")
    assert arr.captions == ["a b", "c", "d", "e", ""]


# ---- one owner of the format: the writer, the extras, the typed negatives -------------------


def test_bad_parts_write_nothing(tmp_path) -> None:
    d = precomp_dir(tmp_path, "x")
    for kwargs in ({"nregions": [0, 3]}, {"boxes": np.zeros((2, 2, 4))}, {"ids": ["a"]}):
        with pytest.raises(DataError):
            write_precomp(d, "train", np.zeros((2, 3, 8)), ["c"] * 10, **kwargs)
        assert sorted(p.name for p in d.iterdir()) == []  # not even the features


def test_rewrite_replaces_the_whole_split(root) -> None:
    """Writing a split again leaves no file of the former version (boxes, ids, ...) behind."""
    d = precomp_dir(root, "toy")
    write_precomp(d, "train", np.ones((2, 5, 8)), None)
    assert sorted(p.name for p in d.iterdir()) == ["train_ims.npy"]
    arr = load_split_dir(d, "train", require_captions=False)
    assert arr.feats.shape == (2, 5, 8) and arr.captions == [] and arr.boxes is None
    with pytest.raises(DataError, match="missing file: .*train_caps.txt"):
        load_split_dir(d, "train")


def test_split_writer_streams_and_aborts_cleanly(root) -> None:
    d = precomp_dir(root, "toy")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(KeyboardInterrupt), SplitWriter(d, "train", 2, 3, 8) as w:
        w.ims[0] = 1.0
        raise KeyboardInterrupt  # an interrupted extraction
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # the old split is intact
    with SplitWriter(d, "dev", 2, 3, 8) as w:
        w.ims[1, :2] = 7.0
        files = w.finish(
            _caps(2), sizes=[[10, 20], [30, 40]], regions=[{"labels": ["x"]}, {"labels": []}]
        )
    assert set(files) == {"ims", "caps", "sizes", "regions"}
    arr = load_split_dir(d, "dev")
    assert arr.feats[1, :2].tolist() == [[7.0] * 8] * 2 and arr.feats[0].sum() == 0
    assert arr.sizes.tolist() == [[10, 20], [30, 40]]
    assert read_regions(d, "dev") == [{"labels": ["x"]}, {"labels": []}]
    assert read_regions(d, "train") is None
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_typed_negatives_roundtrip(root) -> None:
    d = precomp_dir(root, "toy")
    assert read_negatives(d, "train") is None  # no file: no negatives
    negs: list[list[dict]] = [[] for _ in range(20)]
    negs[0] = [
        {"type": "colour_swap", "text": "a blue circle and a red square"},
        {"type": "relation_opposite", "text": "a circle right of\na square"},
    ]
    negs[19] = [{"type": "count", "text": "three cubes"}]
    path = write_negatives(d, "train", negs)
    assert path.name == "train_negs.jsonl" and len(path.read_text().splitlines()) == 20
    back = read_negatives(d, "train")
    assert back is not None and len(back) == 20 and back[1] == [] and back[19] == negs[19]
    assert back[0][1] == {"type": "relation_opposite", "text": "a circle right of a square"}


def test_negatives_must_match_the_captions(root) -> None:
    d = precomp_dir(root, "toy")
    with pytest.raises(DataError, match="19 lines of negatives but .* 20 captions"):
        write_negatives(d, "train", [[]] * 19)
    assert read_negatives(d, "train") is None  # nothing was written
    (d / "train_negs.jsonl").write_text("[]\n" * 21)
    with pytest.raises(DataError, match="21 lines but train_caps.txt has 20 captions"):
        read_negatives(d, "train")
    for bad, message in [
        ('{"type": "x", "text": "y"}', "expected a JSON list"),
        ('[{"type": "x"}]', "'type': str, 'text': str"),
        ('[{"type": 1, "text": "y"}]', "'type': str, 'text': str"),
        ("[not json", "line 1 is not JSON"),
    ]:
        (d / "train_negs.jsonl").write_text(bad + "\n" + "[]\n" * 19)
        with pytest.raises(DataError, match=message):
            read_negatives(d, "train")
    with pytest.raises(DataError, match="'type': str, 'text': str"):
        write_negatives(d, "train", [[{"type": "x", "text": 3}]] + [[]] * 19)


def test_toyworld_metrics_read_through_precomp(root) -> None:
    from shan.toyworld.metrics import ToyEvalError, load_toy_split

    anns = {
        "images": [{"id": i, "file": f"imgs/{i}"} for i in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
    }
    d = precomp_dir(root, "toy")
    data = load_toy_split(d, "train", anns)
    assert data.arrays.feats.shape == (4, 3, 8)
    assert data.arrays.masks.sum(1).tolist() == [3, 2, 1, 3]
    assert [r["id"] for r in data.records] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    (d / "train_nregions.npy").write_bytes(b"garbage")  # the format's own checks apply
    with pytest.raises(DataError, match="train_nregions.npy"):
        load_toy_split(d, "train", anns)
    write_precomp(d, "train", np.zeros((4, 3, 8)), _caps(4))  # no boxes, no ids
    with pytest.raises(ToyEvalError, match="train_boxes.npy"):
        load_toy_split(d, "train", anns)
