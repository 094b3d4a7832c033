"""The Bottom-Up-Attention Faster R-CNN (Anderson et al., CVPR 2018) built from torchvision blocks.

This is the detector whose region features SCAN/SHAN were trained on (Flickr30K / COCO "precomp"
features): a Caffe-style ResNet-101 C4 network trained on Visual Genome with 1600 object classes and
400 attributes. :class:`ButdNet` holds the network; :class:`ButdExtractor` runs the original Caffe
inference recipe (``generate_tsv.py``) and implements :class:`shan.detect.base.RegionExtractor`.

Network (names are torchvision-style, see :func:`shan.detect.butd_weights.module_name`)::

    image (B, 3, H, W) BGR, mean-subtracted
      backbone: conv1 7x7/2 -> FrozenBN -> ReLU -> maxpool 3/2 (ceil) -> layer1..3
                                                                    -> (B, 1024, H/16, W/16)
      rpn:      conv 3x3 512 -> ReLU -> objectness (2A: bg 0..A-1, fg A..2A-1), deltas (4A)
      RoIPool 14x14 @ 1/16 -> res5 (3 blocks, stride 1, dilation 2) -> mean   (R, 2048)
      predictor: cls_score (R, C), bbox_pred (R, 4C), attributes: argmax class -> cls_embed (256)
                 -> concat (2304) -> attr_linear1 512 -> ReLU -> attr_linear2 (R, A) -> softmax
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models.resnet import conv1x1, conv3x3
from torchvision.ops import FrozenBatchNorm2d, roi_pool

from shan.detect import caffe_ops
from shan.detect.base import Regions
from shan.detect.butd_weights import (
    ATTR_HIDDEN,
    EMBED_DIM,
    RES5,
    RPN_CH,
    STAGES,
    STEM_CH,
    ButdArch,
    WeightsError,
    load_butd_weights,
)

log = logging.getLogger(__name__)

FEATURE_DIM = RES5[2]
FEATURE_STRIDE = 16
POOL_SIZE = 14


def _bn(c: int) -> FrozenBatchNorm2d:
    return FrozenBatchNorm2d(c, eps=1e-5)


class CaffeBottleneck(nn.Module):
    """ResNet bottleneck with the stride on the first 1x1 conv (Caffe/MSRA style).

    torchvision's ``Bottleneck`` strides the 3x3 conv instead, which changes the sampling grid, so
    the block is assembled here from torchvision's ``conv1x1``/``conv3x3`` and frozen batch norm.
    ``(B, cin, H, W) -> (B, cout, H / stride, W / stride)``.
    """

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = conv1x1(cin, mid, stride)
        self.bn1 = _bn(mid)
        self.conv2 = conv3x3(mid, mid, dilation=dilation)
        self.bn2 = _bn(mid)
        self.conv3 = conv1x1(mid, cout)
        self.bn3 = _bn(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv1x1(cin, cout, stride), _bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.bn1(self.conv1(x)))
        out = F.relu_(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu_(out + identity)


def _stage(n: int, cin: int, mid: int, cout: int, stride: int, dilation: int = 1) -> nn.Sequential:
    blocks = [CaffeBottleneck(cin if i == 0 else cout, mid, cout, stride if i == 0 else 1, dilation)
              for i in range(n)]  # fmt: skip
    return nn.Sequential(*blocks)


class CaffeResNetC4(nn.Module):
    """Stem + res2..res4 of the Caffe ResNet-101: ``(B, 3, H, W) -> (B, 1024, ~H/16, ~W/16)``."""

    def __init__(self, res4_blocks: int = 23) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM_CH, 7, stride=2, padding=3, bias=False)
        self.bn1 = _bn(STEM_CH)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
        depth = (3, 4, res4_blocks)
        for i, ((_, cin, mid, cout), n) in enumerate(zip(STAGES, depth)):
            self.add_module(f"layer{i + 1}", _stage(n, cin, mid, cout, 1 if i == 0 else 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu_(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


class RpnHead(nn.Module):
    """RPN: ``(B, 1024, h, w)`` -> objectness ``(B, 2A, h, w)`` (bg, then fg), deltas
    ``(B, 4A, h, w)``."""

    def __init__(self, cin: int = 1024, num_anchors: int = 12) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, RPN_CH, 3, padding=1)
        self.objectness_logits = nn.Conv2d(RPN_CH, 2 * num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(RPN_CH, 4 * num_anchors, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = F.relu(self.conv(x))
        return self.objectness_logits(t), self.anchor_deltas(t)


class ButdPredictor(nn.Module):
    """Class, box and attribute outputs from ``(R, 2048)`` pooled region features."""

    def __init__(self, num_classes: int = 1601, num_attributes: int = 401) -> None:
        super().__init__()
        self.cls_score = nn.Linear(FEATURE_DIM, num_classes)
        self.bbox_pred = nn.Linear(FEATURE_DIM, 4 * num_classes)
        self.has_attributes = num_attributes > 0
        if self.has_attributes:
            self.cls_embed = nn.Embedding(num_classes, EMBED_DIM)
            self.attr_linear1 = nn.Linear(FEATURE_DIM + EMBED_DIM, ATTR_HIDDEN)
            self.attr_linear2 = nn.Linear(ATTR_HIDDEN, num_attributes)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(R, 2048)`` -> class probabilities ``(R, C)``, attribute probabilities ``(R, A)``.

        The attribute head is fed the arg-max class *including* background, as in the original.
        """
        logits = self.cls_score(feats)
        if not self.has_attributes:
            return logits.softmax(-1), None
        emb = self.cls_embed(logits.argmax(dim=1))
        hidden = F.relu(self.attr_linear1(torch.cat([feats, emb], dim=1)))
        return logits.softmax(-1), self.attr_linear2(hidden).softmax(-1)


class ButdNet(nn.Module):
    """The whole BUTD network; parameters follow :func:`~shan.detect.butd_weights.module_name`.

    Buffers: ``cell_anchors (A, 4)``: the weights file's own, else the 12 anchors of
    ``box_convention`` (Caffe's for ``"caffe"``, the detectron2 port's for ``"detectron2"``), whose
    box arithmetic the RPN stage then uses (see :mod:`shan.detect.caffe_ops`).
    """

    def __init__(self, arch: ButdArch | None = None, box_convention: str = "caffe") -> None:
        super().__init__()
        self.arch = arch = arch or ButdArch()
        self.box_convention = caffe_ops.check_convention(box_convention)
        self.backbone = CaffeResNetC4(arch.res4_blocks)
        self.rpn = RpnHead(STAGES[-1][3], arch.num_anchors)
        cin, mid, cout = RES5
        self.res5 = _stage(3, cin, mid, cout, stride=1, dilation=2)
        self.predictor = ButdPredictor(arch.num_classes, arch.num_attributes)
        anchors = caffe_ops.default_cell_anchors(box_convention)
        if anchors.shape[0] != arch.num_anchors:
            anchors = torch.zeros(arch.num_anchors, 4)  # must come from the weights file
        self.register_buffer("cell_anchors", anchors)

    def region_features(self, feats: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """``feats (B, 1024, h, w)``, ``rois (R, 5)`` (batch index, x1, y1, x2, y2 in input pixels)
        -> ``(R, 2048)``: RoIPool 14x14 at 1/16 -> res5 -> spatial mean."""
        pooled = roi_pool(feats, rois, (POOL_SIZE, POOL_SIZE), 1.0 / FEATURE_STRIDE)
        return self.res5(pooled).mean(dim=(2, 3))


@dataclass
class ButdInference:
    """The settings of the public features' extraction (``generate_tsv.py`` / MILVLG configs)."""

    short_side: int = 600
    max_side: int = 1000
    pixel_mean_bgr: tuple[float, float, float] = (102.9801, 115.9465, 122.7717)
    rpn_pre_nms_topk: int = 6000
    rpn_post_nms_topk: int = 300
    rpn_nms_thresh: float = 0.7
    rpn_min_size: float = 16.0
    class_nms_thresh: float = 0.3
    conf_thresh: float = 0.2
    # ROIs through res5 at once; None: 600 on CUDA, 100 on CPU (each ROI holds ~1.6 MB per
    # 2048 x 14 x 14 activation, so this bounds peak memory)
    roi_batch_size: int | None = None


#: Used by :meth:`ButdExtractor.from_weights` when no ``inference`` is given.
DEFAULT_INFERENCE = ButdInference()


def image_scale(height: int, width: int, short_side: int = 600, max_side: int = 1000) -> float:
    """Caffe's ``_get_image_blob`` scale: short side to ``short_side`` unless the long side would
    then exceed ``max_side`` (after rounding), in which case the long side to ``max_side``."""
    lo, hi = min(height, width), max(height, width)
    scale = short_side / lo
    if np.round(scale * hi) > max_side:
        scale = max_side / hi
    return float(scale)


def preprocess(
    image: Image.Image, cfg: ButdInference, device: torch.device
) -> tuple[torch.Tensor, float]:
    """RGB PIL image -> ``(3, round(H*s), round(W*s))`` BGR mean-subtracted float32 and scale ``s``.

    Bilinear resize with OpenCV's ``cv2.resize(fx=s, fy=s)`` sampling (half-pixel centres, the
    scale itself used for the mapping, no antialiasing).
    """
    arr = np.asarray(image.convert("RGB"))
    h, w = arr.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"empty image of size {w}x{h}")
    s = image_scale(h, w, cfg.short_side, cfg.max_side)
    x = torch.from_numpy(arr.copy()).to(device).permute(2, 0, 1).flip(0).float()  # BGR
    x = x - torch.tensor(cfg.pixel_mean_bgr, device=device).view(3, 1, 1)
    size = [int(np.round(h * s)), int(np.round(w * s))]
    x = torch.ops.aten.upsample_bilinear2d.default(x[None], size, False, s, s)[0]
    return x.contiguous(), s


def _first_synonyms(text: str) -> list[str]:
    names = [ln.split(",")[0].strip() for ln in text.splitlines()]
    return [n for n in names if n]


def packaged_names(filename: str) -> list[str]:
    """The Visual Genome vocabulary shipped with the package (``shan/detect/vocab/``):
    ``"objects_vocab.txt"`` (1600 names) or ``"attributes_vocab.txt"`` (400)."""
    res = importlib.resources.files(__package__).joinpath("vocab", filename)
    return _first_synonyms(res.read_text(encoding="utf-8"))


def vocabulary(weights: Path, filename: str, count: int, prefix: str) -> list[str]:
    """``count`` names for a weights file: the first synonym of each line of ``filename`` next to
    it, else the packaged Visual Genome vocabulary when its length is ``count``, else
    ``prefix_<i>``. A file next to the weights with the wrong length is skipped with a warning."""
    beside = weights.parent / filename
    if beside.is_file():
        names = _first_synonyms(beside.read_text(encoding="utf-8"))
        if len(names) == count:
            return names
        log.warning("%s has %d names but the weights have %d; not used",
                    beside, len(names), count)  # fmt: skip
    try:
        packaged = packaged_names(filename)
    except OSError as e:  # an install without the package data
        log.warning("packaged vocabulary %s unavailable (%s); using %s_<i>", filename, e, prefix)
        packaged = []
    if len(packaged) == count:
        return packaged
    return [f"{prefix}_{i}" for i in range(count)]


class ButdExtractor:
    """Bottom-Up-Attention regions: proposals, 2048-d features, VG classes and attributes.

    Implements :class:`shan.detect.base.RegionExtractor`. Returned tensors are on the CPU.
    ``Regions.boxes`` are the RPN *proposals* (not the class-regressed boxes) in original-image
    pixels, as in the public features; ``Regions.scores`` is the probability of the region's
    arg-max object class; ``extra`` holds ``max_conf (R,)``, ``class_ids (R,)`` and
    ``attribute_ids (R,)`` (indices into the 1600 / 400 names, background excluded).
    """

    feature_dim = FEATURE_DIM

    def __init__(
        self,
        net: ButdNet,
        device: str | torch.device = "cpu",
        class_names: Sequence[str] | None = None,
        attribute_names: Sequence[str] | None = None,
        min_regions: int = 10,
        max_regions: int = 100,
        inference: ButdInference | None = None,
    ) -> None:
        if min_regions < 1 or min_regions > max_regions:
            raise ValueError(
                f"need 1 <= min_regions <= max_regions, got {min_regions} and {max_regions}"
            )
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        self.cfg = inference or DEFAULT_INFERENCE
        a = net.arch
        self.class_names = list(class_names or [f"class_{i}" for i in range(a.num_classes - 1)])
        self.attribute_names = list(
            attribute_names or [f"attribute_{i}" for i in range(max(a.num_attributes - 1, 0))]
        )
        if len(self.class_names) != a.num_classes - 1:
            raise ValueError(f"{len(self.class_names)} class names for {a.num_classes - 1} classes")
        self.min_regions = min_regions
        self.max_regions = max_regions

    @classmethod
    def from_weights(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        min_regions: int = 10,
        max_regions: int = 100,
        inference: ButdInference | None = None,
    ) -> ButdExtractor:
        """Load a MILVLG ``.pth`` or detectron2-style ``.pkl`` BUTD weights file.

        Class / attribute names come from ``objects_vocab.txt`` / ``attributes_vocab.txt`` beside
        the weights (one line per class, synonyms after commas), else from the Visual Genome
        vocabularies shipped in ``shan/detect/vocab/`` when the counts match (1600 / 400), else
        ``class_<i>`` names.

        Raises:
            WeightsError: the file is unreadable or does not match the network.
        """
        path = Path(path)
        loaded = load_butd_weights(path)
        with torch.device("meta"):
            net = ButdNet(loaded.arch, loaded.box_convention)
        state = dict(loaded.state_dict)
        state["cell_anchors"] = loaded.cell_anchors
        try:
            net.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:  # cannot happen when the schema and the module agree
            raise WeightsError(f"{path}: weights do not fit ButdNet: {e}") from e
        inf = inference or DEFAULT_INFERENCE
        if loaded.pixel_mean is not None and inference is None:
            inf = ButdInference(
                **{**DEFAULT_INFERENCE.__dict__, "pixel_mean_bgr": loaded.pixel_mean}
            )
        if loaded.arch.res4_blocks != 23:
            log.warning("%s: res4 has %d blocks (the public BUTD weights have 23)",
                        path, loaded.arch.res4_blocks)  # fmt: skip
        a = loaded.arch
        classes = vocabulary(path, "objects_vocab.txt", a.num_classes - 1, "class")
        attrs = vocabulary(path, "attributes_vocab.txt", max(a.num_attributes - 1, 0), "attribute")
        return cls(net, device, classes, attrs, min_regions, max_regions, inf)

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def extract(self, images: Sequence[Image.Image]) -> list[Regions]:
        """RGB PIL images -> one :class:`Regions` per image (``min_regions..max_regions`` each,
        fewer only when the image yields fewer proposals)."""
        if not images:
            return []
        cfg = self.cfg
        prepped = [preprocess(im, cfg, self.device) for im in images]
        # Same-size images share one backbone pass (no padding, so features are unchanged).
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (x, _) in enumerate(prepped):
            groups.setdefault(tuple(x.shape[1:]), []).append(i)
        proposals: list[torch.Tensor] = [torch.empty(0)] * len(images)
        pooled_parts: list[tuple[list[int], torch.Tensor]] = []
        for (h, w), idx in groups.items():
            batch = torch.stack([prepped[i][0] for i in idx])
            feats = self.net.backbone(batch)
            obj, deltas = self.net.rpn(feats)
            for j, i in enumerate(idx):
                proposals[i] = self._proposals(obj[j], deltas[j], h, w, prepped[i][1])
            rois = torch.cat(
                [
                    torch.cat([torch.full_like(proposals[i][:, :1], j), proposals[i]], 1)
                    for j, i in enumerate(idx)
                ]  # fmt: skip
            )
            pooled_parts.append(
                (idx, roi_pool(feats, rois, (POOL_SIZE, POOL_SIZE), 1.0 / FEATURE_STRIDE))
            )
        # res5 + predictor over every image's proposals, in chunks.
        order = [i for idx, _ in pooled_parts for i in idx]
        pooled = torch.cat([p for _, p in pooled_parts])
        del pooled_parts
        feats_l, cls_l, attr_l = [], [], []
        chunk = cfg.roi_batch_size or (600 if self.device.type == "cuda" else 100)
        for start in range(0, pooled.shape[0], chunk):
            f = self.net.res5(pooled[start : start + chunk]).mean(dim=(2, 3))
            c, a = self.net.predictor(f)
            feats_l.append(f)
            cls_l.append(c)
            attr_l.append(a)
        region_feats = torch.cat(feats_l)
        cls_prob = torch.cat(cls_l)
        attr_prob = torch.cat(attr_l) if attr_l and attr_l[0] is not None else None
        counts = [proposals[i].shape[0] for i in order]
        split = dict(zip(order, range(len(order))))
        parts_f = region_feats.split(counts)
        parts_c = cls_prob.split(counts)
        parts_a = attr_prob.split(counts) if attr_prob is not None else [None] * len(order)
        # proposals in original-image pixels: the frame of the per-class NMS (as in the Caffe
        # script) and of the returned boxes
        orig = [p / prepped[i][1] for i, p in enumerate(proposals)]
        max_conf = self._max_conf([orig[i] for i in order], list(parts_c))
        results = []
        for i, im in enumerate(images):
            k = split[i]
            results.append(
                self._regions(
                    orig[i],
                    parts_f[k],
                    parts_c[k],
                    parts_a[k],
                    max_conf[k],
                    (im.width, im.height),
                )  # fmt: skip
            )
        return results

    def _proposals(
        self, obj: torch.Tensor, deltas: torch.Tensor, h: int, w: int, scale: float
    ) -> torch.Tensor:
        """One image's RPN maps ``(2A, fh, fw)``, ``(4A, fh, fw)`` -> proposals ``(P, 4)``."""
        a = self.net.cell_anchors.shape[0]
        fh, fw = obj.shape[-2:]
        fg = obj.view(2, a, fh, fw).softmax(dim=0)[1].permute(1, 2, 0).reshape(-1)
        d = deltas.view(a, 4, fh, fw).permute(2, 3, 0, 1).reshape(-1, 4)
        anchors = caffe_ops.shift_anchors(self.net.cell_anchors, fh, fw, FEATURE_STRIDE)
        boxes, _ = caffe_ops.rpn_proposals(
            anchors, fg, d, h, w, self.cfg.rpn_min_size * scale,
            self.cfg.rpn_pre_nms_topk, self.cfg.rpn_post_nms_topk, self.cfg.rpn_nms_thresh,
            convention=self.net.box_convention,
        )  # fmt: skip
        return boxes

    def _max_conf(self, boxes: list[torch.Tensor], probs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-class NMS max_conf for every image at once (padded to the largest proposal count).

        ``boxes``: each image's proposals ``(R_i, 4)`` in *original-image* pixels (the frame of the
        Caffe script's NMS); ``probs``: its class probabilities ``(R_i, C)``, background first.
        """
        r = max(b.shape[0] for b in boxes)
        n = len(boxes)
        c = probs[0].shape[1] - 1
        pb = boxes[0].new_zeros(n, r, 4)
        ps = probs[0].new_zeros(n, r, c)
        valid = torch.zeros(n, r, dtype=torch.bool, device=pb.device)
        for i, (b, p) in enumerate(zip(boxes, probs)):
            pb[i, : b.shape[0]] = b
            ps[i, : b.shape[0]] = p[:, 1:]
            valid[i, : b.shape[0]] = True
        mc = caffe_ops.class_nms_max_conf(pb, ps, self.cfg.class_nms_thresh, valid)
        return [mc[i, : b.shape[0]] for i, b in enumerate(boxes)]

    def _regions(
        self,
        boxes: torch.Tensor,
        feats: torch.Tensor,
        cls_prob: torch.Tensor,
        attr_prob: torch.Tensor | None,
        max_conf: torch.Tensor,
        size: tuple[int, int],
    ) -> Regions:
        keep = caffe_ops.select_boxes(
            max_conf, self.cfg.conf_thresh, self.min_regions, self.max_regions
        )
        obj_p, obj_i = cls_prob[keep, 1:].max(dim=1)
        if attr_prob is not None:
            att_p, att_i = attr_prob[keep, 1:].max(dim=1)
            attributes = [self.attribute_names[j] for j in att_i.tolist()]
        else:
            att_p = torch.zeros_like(obj_p)
            att_i = torch.full_like(obj_i, -1)
            attributes = [""] * len(keep)
        return Regions(
            boxes=boxes[keep].float().cpu(),
            features=feats[keep].float().cpu(),
            scores=obj_p.float().cpu(),
            labels=[self.class_names[j] for j in obj_i.tolist()],
            attributes=attributes,
            attribute_scores=att_p.float().cpu(),
            image_size=size,
            extra={
                "max_conf": max_conf[keep].float().cpu(),
                "class_ids": obj_i.cpu(),
                "attribute_ids": att_i.cpu(),
            },
        )
