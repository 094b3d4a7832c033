"""Loading both public BUTD weight formats (random tensors with the real key names and shapes)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shan.detect import caffe_ops
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
from shan.errors import ShanError

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
    assert torch.equal(lw.cell_anchors, torch.arange(48.0).view(12, 4)) and lw.anchors_from_file
    assert lw.box_convention == "caffe" and lw.filled_norms == []
    assert torch.equal(
        lw.state_dict["predictor.cls_score.weight"], small_sd[f"{BP}.cls_score.weight"]
    )
    assert torch.equal(lw.state_dict["backbone.layer1.0.downsample.0.weight"],
                       small_sd["backbone.res2.0.shortcut.weight"])  # fmt: skip
    # unwrapped state dict too; no anchors stored -> Caffe's generated anchors, "+1" convention
    lw2 = load_butd_weights(_save_pth(tmp_path / "plain.pth", small_sd, wrap=False))
    assert torch.equal(lw2.cell_anchors, caffe_ops.generate_anchors())
    assert not lw2.anchors_from_file and lw2.box_convention == "caffe"


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
    # no anchors stored: the detectron2 port's generated anchors and box convention, never Caffe's
    assert lw.box_convention == "detectron2" and not lw.anchors_from_file
    assert torch.equal(lw.cell_anchors, caffe_ops.detectron2_cell_anchors())
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


def _dump_pkl(path, arrays):
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "test"}, f)
    return path


def test_pkl_with_stored_anchors_uses_them_with_the_detectron2_convention(tmp_path, small_sd):
    pkl = _to_pkl_layout(small_sd)
    stored = np.arange(48, dtype=np.float32).reshape(12, 4)
    lw = load_butd_weights(_dump_pkl(tmp_path / "a.pkl", {**pkl, ANCHORS_KEY: stored}))
    assert lw.anchors_from_file and lw.box_convention == "detectron2"
    assert torch.equal(lw.cell_anchors, torch.from_numpy(stored))


def test_frozen_norms_stored_as_weight_and_bias_only_get_default_statistics(
    tmp_path, small_sd, caplog
):
    pkl = _to_pkl_layout(small_sd)
    norms = sorted(k[: -len(".running_mean")] for k in pkl if k.endswith(".running_mean"))
    assert len(norms) == 38  # every norm of the small network
    # the reference: the same file with the statistics written out as mean 0, var 1
    ref = {**pkl}
    for n in norms:
        ref[f"{n}.running_mean"] = np.zeros_like(pkl[f"{n}.weight"])
        ref[f"{n}.running_var"] = np.ones_like(pkl[f"{n}.weight"])
    bare = {k: v for k, v in pkl.items() if "running_" not in k}
    with caplog.at_level("WARNING", logger="shan.detect.butd_weights"):
        lw = load_butd_weights(_dump_pkl(tmp_path / "bare.pkl", bare))
    assert sorted(lw.filled_norms) == norms
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "38 frozen norms are stored as weight and bias only" in msg and "mean 0, var 1" in msg
    full = load_butd_weights(_dump_pkl(tmp_path / "ref.pkl", ref))
    assert full.filled_norms == []
    assert set(lw.state_dict) == set(full.state_dict)
    for k, v in full.state_dict.items():
        assert torch.equal(lw.state_dict[k], v), k
    # the network built from it runs, and a norm keeping only one statistic is still an error
    half = {k: v for k, v in pkl.items() if not k.endswith("res2.0.conv1.norm.running_var")}
    with pytest.raises(WeightsError, match=r"missing 1 keys: backbone\.res2\.0\.conv1\.norm\.run"):
        load_butd_weights(_dump_pkl(tmp_path / "half.pkl", half))


# ----------------------------------------------------------------------------- hostile files
_OOM_SCRIPT = r"""
import resource, sys
import torch  # imported before the limit: its libraries alone map a few GB of address space
from shan.detect.butd_weights import WeightsError, load_butd_weights
vm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")][0]
limit = vm * 1024 + 1024**3  # what is mapped now + 1 GiB
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for path in sys.argv[1:]:
    try:
        load_butd_weights(path)
        print("LOADED", path)
    except WeightsError as e:
        print("REFUSED", e)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_huge_block_index_is_refused_before_allocating(tmp_path):
    """A 1.5 KB file naming block 99999999 of res4 used to build a 20 GB key list (issue 9.2).

    Run in a subprocess whose address space is capped 1 GiB above its size after importing torch,
    so a regression ends in a MemoryError there instead of exhausting this machine.
    """
    key = "backbone.res4.99999999.conv1.weight"
    pth = tmp_path / "evil.pth"
    torch.save({key: torch.zeros(2)}, pth)
    pkl = _dump_pkl(tmp_path / "evil.pkl", {key: np.zeros(2, np.float32)})
    assert pth.stat().st_size < 2000 and pkl.stat().st_size < 2000
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _OOM_SCRIPT, str(pth), str(pkl)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(ln.startswith("REFUSED") for ln in lines), proc.stdout
    for ln in lines:
        assert "block index outside ResNet-101" in ln and key in ln
        assert "res4 23" in ln


def _hostile(tmp_path, small_sd, name, **changes):
    sd = dict(small_sd)
    sd.update(changes)
    return _save_pth(tmp_path / name, sd)


@pytest.mark.parametrize(
    "key",
    [
        "backbone.res4.1" + "0" * 5000 + ".conv1.weight",  # int() would refuse > 4300 digits
        "backbone.res2.3.conv1.weight",  # res2 has 3 blocks
        "backbone.res3.4.conv1.weight",
        "backbone.res4.23.conv1.weight",
        "roi_heads.res5.3.conv1.weight",
        "backbone.res4.-1.conv1.weight",
        "backbone.res4.٣.conv1.weight",  # a non-ASCII digit
    ],
    ids=["5001-digits", "res2.3", "res3.4", "res4.23", "res5.3", "negative", "arabic-digit"],
)
def test_block_indices_outside_resnet101_are_named(tmp_path, small_sd, key):
    p = _hostile(tmp_path, small_sd, "idx.pth", **{key: torch.zeros(1)})
    with pytest.raises(WeightsError, match="block index outside ResNet-101") as e:
        load_butd_weights(p)
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, ShanError)
    assert key[:60] in msg and len(msg) < 1000  # long keys are shortened in the message


def test_expanded_tensor_with_a_huge_shape_is_refused(tmp_path, small_sd):
    """Stride-0 views cost nothing in the file but a huge class count would be allocated later."""
    n = 10**7
    huge = {
        f"{BP}.cls_score.weight": torch.zeros(1).expand(n, 2048),
        f"{BP}.cls_score.bias": torch.zeros(1).expand(n),
        f"{BP}.bbox_pred.weight": torch.zeros(1).expand(4 * n, 2048),
        f"{BP}.bbox_pred.bias": torch.zeros(1).expand(4 * n),
        f"{BP}.cls_embed.weight": torch.zeros(1).expand(n, 256),
    }
    p = _save_pth(tmp_path / "expanded.pth", huge)
    assert p.stat().st_size < 5000
    with pytest.raises(WeightsError, match="data smaller than the shape") as e:
        load_butd_weights(p)
    assert f"{BP}.cls_score.weight (10000000, 2048)" in str(e.value)


def test_counts_above_the_public_network_are_refused(tmp_path):
    """Checked from the declared shapes, before the schema (and anything sized by them) is built."""
    for name, value, message in [
        (f"{BP}.cls_score.weight", torch.zeros(1602, 1), r"1602 classes, expected 2\.\.1601"),
        (f"{BP}.attr_linear2.weight", torch.zeros(402, 1), r"402 attributes, expected 2\.\.401"),
        (ANCHORS_KEY, torch.zeros(13, 4), r"13 anchors, expected 1\.\.12"),
    ]:
        with pytest.raises(WeightsError, match=message):
            load_butd_weights(_save_pth(tmp_path / "counts.pth", {name: value}))


def test_wrong_types_dims_and_values_are_named(tmp_path, small_sd):
    conv, nan = "backbone.res3.1.conv2.weight", float("nan")
    cases = {
        "not a tensor or array": {"backbone.res2.0.conv1.norm.weight": "a string"},
        "not a floating-point array": {conv: small_sd[conv].to(torch.int32)},
        "more than 4 dimensions": {conv: small_sd[conv][None]},
        "non-finite values": {conv: small_sd[conv].clone().index_fill_(0, torch.tensor([3]), nan)},
    }  # fmt: skip
    for i, (what, change) in enumerate(cases.items()):
        p = _hostile(tmp_path, small_sd, f"case{i}.pth", **change)
        with pytest.raises(WeightsError) as e:
            load_butd_weights(p)
        assert what in str(e.value) and next(iter(change)) in str(e.value), str(e.value)
    # complex numbers, booleans and inf in the .pkl format too
    pkl = _to_pkl_layout(small_sd)
    for i, bad in enumerate([pkl[conv].astype(np.complex64), pkl[conv] > 0]):
        with pytest.raises(WeightsError, match="not a floating-point array"):
            load_butd_weights(_dump_pkl(tmp_path / f"t{i}.pkl", {**pkl, conv: bad}))
    inf = np.array([1.0, np.inf, 3.0], np.float32)
    with pytest.raises(WeightsError, match="non-finite values .*pixel_mean"):
        load_butd_weights(_dump_pkl(tmp_path / "inf.pkl", {**pkl, "pixel_mean": inf}))


def test_num_batches_tracked_must_belong_to_a_norm_and_be_one_integer(tmp_path, small_sd):
    ok = "backbone.res4.0.conv1.norm.num_batches_tracked"
    load_butd_weights(_hostile(tmp_path, small_sd, "ok.pth", **{ok: torch.tensor(7)}))
    p = _hostile(tmp_path, small_sd, "stray.pth",
                 **{"backbone.res4.0.conv9.norm.num_batches_tracked": torch.tensor(0)})  # fmt: skip
    with pytest.raises(WeightsError, match="unexpected 1 keys: backbone.res4.0.conv9"):
        load_butd_weights(p)
    p = _hostile(tmp_path, small_sd, "big.pth", **{ok: torch.zeros(5, dtype=torch.long)})
    with pytest.raises(WeightsError, match="expected one integer"):
        load_butd_weights(p)


def test_compressed_torch_archive_that_unpacks_too_far_is_refused(tmp_path, monkeypatch):
    """torch.load allocates each zip member at its declared size; deflate packs zeros ~1000-fold."""
    import zipfile

    from shan.detect import butd_weights

    plain = tmp_path / "plain.pth"
    torch.save({"x": torch.zeros(2_000_000)}, plain)  # 8 MB of zeros
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    assert bomb.stat().st_size < 100_000
    monkeypatch.setattr(butd_weights, "MAX_UNPACKED_BYTES", 4_000_000)
    with pytest.raises(WeightsError, match=r"unpacks to 7\.6 MiB, more than the 4 MiB") as e:
        load_butd_weights(bomb)
    assert "\n" not in str(e.value)
    # the same data stored plainly passes that check (and then fails the layout check)
    monkeypatch.setattr(butd_weights, "MAX_UNPACKED_BYTES", 9_000_000)
    with pytest.raises(WeightsError, match="does not match the MILVLG BUTD layout"):
        load_butd_weights(bomb)
