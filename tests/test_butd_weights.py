"""Loading both public BUTD weight formats (random tensors with the real key names and shapes)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from shan.detect.butd import ButdNet
from shan.detect.butd_weights import (
    ANCHORS_KEY,
    ButdArch,
    WeightsError,
    load_butd_weights,
    milvlg_schema,
    module_name,
    pkl_schema,
    random_weights,
    read_checkpoint,
)

SMALL = ButdArch(res4_blocks=1, num_classes=11, num_attributes=6)
BP = "roi_heads.box_predictor"


def test_full_size_schema_has_the_public_shapes():
    full = milvlg_schema(ButdArch())
    assert full["backbone.stem.conv1.weight"] == (64, 3, 7, 7)
    assert full["backbone.res4.22.conv3.weight"] == (1024, 256, 1, 1)
    assert "backbone.res4.23.conv1.weight" not in full
    assert full["backbone.res3.0.shortcut.weight"] == (512, 256, 1, 1)
    assert "backbone.res3.1.shortcut.weight" not in full
    assert full["proposal_generator.rpn_head.conv.weight"] == (512, 1024, 3, 3)
    assert full["proposal_generator.rpn_head.objectness_logits.weight"] == (24, 512, 1, 1)
    assert full["proposal_generator.rpn_head.anchor_deltas.weight"] == (48, 512, 1, 1)
    assert full["roi_heads.res5.0.conv2.weight"] == (512, 512, 3, 3)
    assert full["roi_heads.res5.0.shortcut.weight"] == (2048, 1024, 1, 1)
    assert full[f"{BP}.cls_score.weight"] == (1601, 2048)
    assert full[f"{BP}.bbox_pred.weight"] == (6404, 2048)
    assert full[f"{BP}.cls_embed.weight"] == (1601, 256)
    assert full[f"{BP}.attr_linear1.weight"] == (512, 2304)
    assert full[f"{BP}.attr_linear2.weight"] == (401, 512)
    n_params = sum(int(np.prod(s)) for k, s in full.items() if "running" not in k)
    assert 60e6 < n_params < 70e6  # ResNet-101 C4 + heads
    pkl = pkl_schema(ButdArch())
    assert pkl["proposal_generator.rpn_head.objectness_logits.weight"] == (12, 512, 1, 1)
    assert pkl[f"{BP}.bbox_pred.weight"] == (6400, 2048)
    assert pkl[f"{BP}.cls_embedding.weight"] == (1601, 256)
    assert pkl[f"{BP}.fc_attr.weight"] == (512, 2304)
    assert pkl[f"{BP}.attr_score.weight"] == (401, 512)
    assert f"{BP}.cls_embed.weight" not in pkl


def test_full_size_network_matches_schema_without_allocating():
    with torch.device("meta"):
        net = ButdNet(ButdArch())
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items() if k != "cell_anchors"}
    theirs = {module_name(k): v for k, v in milvlg_schema(ButdArch()).items()}
    assert ours == theirs
    assert (
        module_name("backbone.res4.3.conv2.norm.running_var") == "backbone.layer3.3.bn2.running_var"
    )
    assert module_name("roi_heads.res5.0.shortcut.norm.bias") == "res5.0.downsample.1.bias"
    assert module_name("backbone.stem.conv1.norm.weight") == "backbone.bn1.weight"


@pytest.fixture(scope="module")
def small_sd():
    return random_weights(SMALL, seed=3)


def _save_pth(path, sd, wrap=True, extra=None):
    sd = dict(sd)
    sd.update(extra or {})
    torch.save({"model": sd, "iteration": 5} if wrap else sd, path)
    return path


def test_load_milvlg_pth(tmp_path, small_sd):
    extra = {"backbone.res4.0.conv1.norm.num_batches_tracked": torch.tensor(0),
             ANCHORS_KEY: torch.arange(48.0).view(12, 4)}  # fmt: skip
    p = _save_pth(tmp_path / "w.pth", small_sd, extra=extra)
    lw = load_butd_weights(p)
    assert lw.arch == SMALL and lw.source_format == "milvlg"
    assert torch.equal(lw.cell_anchors, torch.arange(48.0).view(12, 4))
    assert torch.equal(
        lw.state_dict["predictor.cls_score.weight"], small_sd[f"{BP}.cls_score.weight"]
    )
    assert torch.equal(lw.state_dict["backbone.layer1.0.downsample.0.weight"],
                       small_sd["backbone.res2.0.shortcut.weight"])  # fmt: skip
    # unwrapped state dict too; no anchors stored -> None (Caffe anchors are generated later)
    lw2 = load_butd_weights(_save_pth(tmp_path / "plain.pth", small_sd, wrap=False))
    assert lw2.cell_anchors is None


def _to_pkl_layout(sd: dict) -> dict:
    """MILVLG layout -> the detectron2 pickle's (background last, one objectness logit)."""
    out = {k: v.numpy().copy() for k, v in sd.items()}
    ren = {"cls_embed.weight": "cls_embedding.weight", "attr_linear1.weight": "fc_attr.weight",
           "attr_linear1.bias": "fc_attr.bias", "attr_linear2.weight": "attr_score.weight",
           "attr_linear2.bias": "attr_score.bias"}  # fmt: skip
    for a, b in ren.items():
        out[f"{BP}.{b}"] = out.pop(f"{BP}.{a}")
    for k in ("cls_score.weight", "cls_score.bias", "cls_embedding.weight", "attr_score.weight",
              "attr_score.bias"):  # fmt: skip
        out[f"{BP}.{k}"] = np.concatenate([out[f"{BP}.{k}"][1:], out[f"{BP}.{k}"][:1]])
    for k in ("bbox_pred.weight", "bbox_pred.bias"):
        out[f"{BP}.{k}"] = out[f"{BP}.{k}"][4:]
    rpn = "proposal_generator.rpn_head.objectness_logits"
    for k in ("weight", "bias"):
        t = out[f"{rpn}.{k}"]
        out[f"{rpn}.{k}"] = t[12:] - t[:12]  # fg - bg logit: sigmoid of it = 2-way softmax fg
    return out


def test_load_detectron2_pkl_converts_layout(tmp_path, small_sd):
    pkl = _to_pkl_layout(small_sd)
    assert set(pkl) == set(pkl_schema(SMALL))
    p = tmp_path / "w.pkl"
    with open(p, "wb") as f:
        pickle.dump({"model": pkl, "__author__": "test"}, f)
    lw = load_butd_weights(p)
    assert lw.arch == SMALL and lw.source_format == "detectron2-pkl"
    sd = lw.state_dict
    # background back at index 0 for classes, embeddings and attributes
    assert torch.equal(sd["predictor.cls_score.weight"], small_sd[f"{BP}.cls_score.weight"])
    assert torch.equal(sd["predictor.cls_embed.weight"], small_sd[f"{BP}.cls_embed.weight"])
    assert torch.equal(sd["predictor.attr_linear2.bias"], small_sd[f"{BP}.attr_linear2.bias"])
    # zero background box block, class boxes unchanged
    assert (sd["predictor.bbox_pred.weight"][:4] == 0).all()
    assert torch.equal(sd["predictor.bbox_pred.weight"][4:], small_sd[f"{BP}.bbox_pred.weight"][4:])
    # objectness: softmax over (bg, fg) of the converted head == sigmoid of the pickle's logit
    w, b = sd["rpn.objectness_logits.weight"], sd["rpn.objectness_logits.bias"]
    assert w.shape == (24, 512, 1, 1)
    x = torch.randn(512)
    logits = w[:, :, 0, 0] @ x + b
    fg = torch.stack([logits[:12], logits[12:]]).softmax(0)[1]
    single = torch.from_numpy(pkl["proposal_generator.rpn_head.objectness_logits.weight"])
    single_b = torch.from_numpy(pkl["proposal_generator.rpn_head.objectness_logits.bias"])
    assert torch.allclose(fg, torch.sigmoid(single[:, :, 0, 0] @ x + single_b), atol=1e-6)


def test_pkl_and_pth_give_the_same_network(tmp_path, small_sd):
    p1 = _save_pth(tmp_path / "a.pth", small_sd)
    p2 = tmp_path / "a.pkl"
    with open(p2, "wb") as f:
        pickle.dump(_to_pkl_layout(small_sd), f)
    a, b = load_butd_weights(p1).state_dict, load_butd_weights(p2).state_dict
    assert set(a) == set(b)
    for k in a:
        if k.startswith("rpn.objectness") or k.startswith("predictor.bbox_pred"):
            continue  # different but equivalent parameterisations (checked above)
        assert torch.allclose(a[k], b[k]), k


def test_missing_unexpected_misshaped_are_named(tmp_path, small_sd):
    sd = dict(small_sd)
    del sd["backbone.res3.2.conv2.weight"]
    sd["roi_heads.box_predictor.surprise.weight"] = torch.zeros(3)
    sd["proposal_generator.rpn_head.conv.bias"] = torch.zeros(7)
    p = _save_pth(tmp_path / "bad.pth", sd)
    with pytest.raises(WeightsError) as e:
        load_butd_weights(p)
    msg = str(e.value)
    assert "missing 1 keys: backbone.res3.2.conv2.weight" in msg
    assert "unexpected 1 keys: roi_heads.box_predictor.surprise.weight" in msg
    assert "proposal_generator.rpn_head.conv.bias: expected (512,), got (7,)" in msg


def test_missing_res4_block_in_the_middle_is_reported(tmp_path):
    sd = random_weights(ButdArch(res4_blocks=3, num_classes=5, num_attributes=4))
    for k in [k for k in sd if k.startswith("backbone.res4.1.")]:
        del sd[k]
    with pytest.raises(WeightsError, match=r"backbone\.res4\.1\.conv1\.weight"):
        load_butd_weights(_save_pth(tmp_path / "gap.pth", sd))


def test_partial_attribute_head_is_an_error(tmp_path, small_sd):
    sd = dict(small_sd)
    del sd[f"{BP}.attr_linear1.weight"]
    with pytest.raises(WeightsError, match="attr_linear1.weight"):
        load_butd_weights(_save_pth(tmp_path / "part.pth", sd))
    # no attribute head at all is a valid (box-only) file
    sd = {k: v for k, v in small_sd.items() if "attr" not in k and "cls_embed" not in k}
    lw = load_butd_weights(_save_pth(tmp_path / "noattr.pth", sd))
    assert lw.arch.num_attributes == 0


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pkl_refuses_arbitrary_globals(tmp_path, capsys):
    p = tmp_path / "evil.pkl"
    with open(p, "wb") as f:
        pickle.dump({"model": {"x": _Evil()}}, f)
    with pytest.raises(WeightsError, match="refusing to unpickle builtins.print"):
        load_butd_weights(p)
    assert "pwned" not in capsys.readouterr().out


def test_unreadable_inputs(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_butd_weights(tmp_path / "nope.pth")
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="weights_only"):
        load_butd_weights(bad)
    lst = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], lst)
    with pytest.raises(WeightsError, match="dict of named tensors"):
        load_butd_weights(lst)
    trunc = tmp_path / "t.pkl"
    trunc.write_bytes(pickle.dumps({"a": np.zeros(3)})[:10])
    with pytest.raises(WeightsError, match="cannot read"):
        load_butd_weights(trunc)


def test_protocol2_pickle_of_arrays_is_readable(tmp_path):
    p = tmp_path / "old.pkl"
    arrs = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.float64(2.5)}
    with open(p, "wb") as f:
        pickle.dump({"model": arrs}, f, protocol=2)
    sd, fmt = read_checkpoint(p)
    assert fmt == "pkl" and np.array_equal(sd["a"], arrs["a"]) and sd["b"] == 2.5
