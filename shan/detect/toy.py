"""The toy-world detector: a torchvision Faster R-CNN, trained from scratch, with a colour head.

Composed from torchvision parts (not forked): a small conv backbone (one feature map, stride 8,
``out_channels`` = 128), an :class:`~torchvision.models.detection.anchor_utils.AnchorGenerator`
sized to the toy objects, :class:`~torchvision.ops.MultiScaleRoIAlign` 7 × 7, a
:class:`~torchvision.models.detection.faster_rcnn.TwoMLPHead` whose output (``feature_dim``, 256)
is the region feature SHAN reads, a shape classifier (+ background) and — like Bottom-Up
Attention's attribute head — a **colour head** beside it, trained jointly by
:class:`AttributeRoIHeads`.

As a :class:`~shan.detect.base.RegionExtractor`: image → top-scoring detections after class-agnostic
NMS; each region's feature is re-pooled at its refined box, so box, feature, shape and colour
describe the same pixels. Fewer than ``min_regions`` confident detections are topped up with the
next-best candidates; at most ``max_regions`` are returned.

Two switches of :class:`ToyDetectorConfig` (off by default, so older detectors load unchanged):

* ``per_image_norm`` — each input image is normalised by its own per-channel mean and standard
  deviation (:class:`torch.nn.InstanceNorm2d` without parameters in front of the backbone), so a
  shape on a dark background reaches the backbone with the contrast it has on a light one.
* ``whole_image_region`` — one more region per image, the whole picture (box ``0, 0, W, H``, label
  :data:`WHOLE_IMAGE_LABEL`, score 1), pooled like every other region. Object regions carry no
  information about the background or about how many objects there are; this region gives SHAN a
  place to see scene-level facts. It is always the last region of an image and is not a detection
  (metrics skip it).

Training lives in :mod:`shan.toyworld.detector_train` (the toy world's data); this module only
builds, loads and runs the detector.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.ops import MultiScaleRoIAlign, batched_nms
from torchvision.transforms.functional import pil_to_tensor

from shan.detect.base import Regions
from shan.device import resolve_device
from shan.errors import ShanError

WEIGHTS_NAME = "detector.safetensors"
CONFIG_NAME = "detector.json"
TRAINING_NAME = "training.json"  # how it was trained (steps, seconds); informational
WHOLE_IMAGE_LABEL = "whole image"  # the label of the ``whole_image_region`` region


class DetectorError(ShanError, ValueError):
    """A missing or inconsistent detector checkpoint, or bad detector arguments."""


@dataclass
class ToyDetectorConfig:
    """Everything needed to rebuild the detector before loading its weights (saved as JSON)."""

    classes: list[str] = field(default_factory=list)  # shape names (background is implicit, id 0)
    attributes: list[str] = field(default_factory=list)  # colour names
    image_size: int = 256  # images are resized to fit this square (toy images already are)
    widths: tuple[int, ...] = (32, 64, 128, 128)  # backbone stages (two conv blocks each)
    strides: tuple[int, ...] = (2, 2, 2, 1)  # per stage; feature stride = product
    out_channels: int = 128
    feature_dim: int = 256  # TwoMLPHead output = region feature
    anchor_sizes: tuple[int, ...] = (20, 28, 40, 56, 80)  # objects: 24-38 and 54-80 px
    aspect_ratios: tuple[float, ...] = (1.0,)  # toy objects are near-square
    score_thresh: float = 0.3  # a detection counts as confident above this
    nms_thresh: float = 0.4  # class-agnostic NMS between returned regions
    pre_nms_top_n: int = 300  # RPN proposals kept at test time
    min_regions: int = 2
    max_regions: int = 8
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.25, 0.25, 0.25)
    per_image_norm: bool = False  # normalise each image by its own channel mean / std
    whole_image_region: bool = False  # append the whole picture as one more region per image


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallBackbone(nn.Module):
    """A few conv blocks: ``(B, 3, H, W)`` → ``(B, out_channels, H/s, W/s)``, ``s = Π strides``.

    ``per_image_norm`` puts a parameter-free :class:`~torch.nn.InstanceNorm2d` first: every image
    (every mosaic, when training on tiles) is normalised by its own channel statistics.
    """

    def __init__(
        self,
        widths: Sequence[int],
        out_channels: int,
        strides: Sequence[int] | None = None,
        per_image_norm: bool = False,
    ) -> None:
        super().__init__()
        strides = list(strides) if strides is not None else [2, 2, 2, 1][: len(widths)]
        if len(strides) != len(widths):
            raise DetectorError(f"{len(widths)} backbone widths but {len(strides)} strides")
        layers: list[nn.Module] = [nn.InstanceNorm2d(3)] if per_image_norm else []
        cin = 3
        for w, stride in zip(widths, strides):
            layers += [_conv(cin, w, stride), _conv(w, w, 1)]
            cin = w
        layers.append(nn.Conv2d(cin, out_channels, 1))
        self.body = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class AttributeRoIHeads(RoIHeads):
    """torchvision's box head plus a colour classifier on the same region feature.

    Training adds ``loss_attribute`` (cross-entropy of the colour of each positive proposal's
    matched ground-truth object; targets carry ``"attributes"`` (G,) int64).
    """

    def __init__(self, *args: Any, num_attributes: int, feature_dim: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attr_predictor = nn.Linear(feature_dim, num_attributes)

    def forward(  # type: ignore[override]
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        if targets is None:
            raise DetectorError("training the detector needs targets")
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
            proposals, targets
        )
        feats = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(feats)
        attr_logits = self.attr_predictor(feats)
        loss_cls, loss_box = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        attr_t = torch.cat(
            [t["attributes"][m] for t, m in zip(targets, matched_idxs)]
        )  # colour of the matched GT (bg proposals are clamped to GT 0, masked below)
        pos = torch.cat(labels) > 0
        if pos.any():
            loss_attr = F.cross_entropy(attr_logits[pos].float(), attr_t[pos])
        else:
            loss_attr = attr_logits.sum() * 0.0
        losses = {
            "loss_classifier": loss_cls,
            "loss_box_reg": loss_box,
            "loss_attribute": loss_attr,
        }
        return [], losses


def build_model(cfg: ToyDetectorConfig) -> FasterRCNN:
    """The Faster R-CNN (with :class:`AttributeRoIHeads`) described by ``cfg``; random weights."""
    if not cfg.classes or not cfg.attributes:
        raise DetectorError(
            "ToyDetectorConfig needs the class (shape) and attribute (colour) names"
        )
    backbone = SmallBackbone(cfg.widths, cfg.out_channels, cfg.strides, cfg.per_image_norm)
    anchors = AnchorGenerator(
        sizes=(tuple(cfg.anchor_sizes),), aspect_ratios=(tuple(cfg.aspect_ratios),)
    )
    roi_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(cfg.out_channels * 7 * 7, cfg.feature_dim)
    predictor = FastRCNNPredictor(cfg.feature_dim, len(cfg.classes) + 1)
    model = FasterRCNN(
        backbone,
        num_classes=None,
        min_size=cfg.image_size,
        max_size=cfg.image_size,
        image_mean=list(cfg.image_mean),
        image_std=list(cfg.image_std),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=200,
        rpn_pre_nms_top_n_test=cfg.pre_nms_top_n,
        rpn_post_nms_top_n_test=cfg.pre_nms_top_n,
        rpn_batch_size_per_image=128,
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=predictor,
        box_batch_size_per_image=128,
        box_detections_per_img=cfg.max_regions,
    )
    rh = model.roi_heads
    model.roi_heads = AttributeRoIHeads(
        rh.box_roi_pool,
        rh.box_head,
        rh.box_predictor,
        0.5,
        0.5,
        128,
        0.25,
        None,
        0.05,
        0.5,
        cfg.max_regions,
        num_attributes=len(cfg.attributes),
        feature_dim=cfg.feature_dim,
    )
    return model


class ToyDetector:
    """The toy-world :class:`~shan.detect.base.RegionExtractor` (wraps the Faster R-CNN)."""

    def __init__(
        self,
        cfg: ToyDetectorConfig,
        model: FasterRCNN | None = None,
        device: str | torch.device = "cpu",
        min_regions: int | None = None,
        max_regions: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = resolve_device(device)
        self.model = (model if model is not None else build_model(cfg)).to(self.device)
        self.model.eval()
        self.train_info: dict[str, Any] = {}
        self.min_regions = cfg.min_regions if min_regions is None else int(min_regions)
        self.max_regions = cfg.max_regions if max_regions is None else int(max_regions)
        if self.min_regions < 0 or self.max_regions < 1 or self.min_regions > self.max_regions:
            raise DetectorError(
                f"need 0 <= min_regions <= max_regions and max_regions >= 1, "
                f"got min={self.min_regions}, max={self.max_regions}"
            )

    @property
    def feature_dim(self) -> int:
        return self.cfg.feature_dim

    @property
    def classes(self) -> list[str]:
        return list(self.cfg.classes)

    @property
    def attributes(self) -> list[str]:
        return list(self.cfg.attributes)

    # -- persistence ---------------------------------------------------------------------------

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Write ``detector.safetensors`` + ``detector.json`` into ``out_dir``; returns it."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(out / WEIGHTS_NAME))
        (out / CONFIG_NAME).write_text(json.dumps(asdict(self.cfg), indent=2) + "\n")
        if self.train_info:
            (out / TRAINING_NAME).write_text(json.dumps(self.train_info, indent=2) + "\n")
        return out

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        min_regions: int | None = None,
        max_regions: int | None = None,
    ) -> ToyDetector:
        """Load a directory written by :meth:`save_pretrained`."""
        p = Path(path)
        if p.is_file():
            p = p.parent
        wpath, cpath = p / WEIGHTS_NAME, p / CONFIG_NAME
        if not wpath.is_file() or not cpath.is_file():
            raise DetectorError(
                f"no toy detector at {p}: expected {WEIGHTS_NAME} and {CONFIG_NAME} "
                "(train one with scripts/reproduce_toyworld.py)"
            )
        try:
            raw = json.loads(cpath.read_text())
            for key in (
                "widths",
                "strides",
                "anchor_sizes",
                "aspect_ratios",
                "image_mean",
                "image_std",
            ):
                if key in raw:
                    raw[key] = tuple(raw[key])
            cfg = ToyDetectorConfig(**raw)
        except (json.JSONDecodeError, TypeError) as e:
            raise DetectorError(f"{cpath} is not a valid toy detector config: {e}") from e
        model = build_model(cfg)
        try:
            model.load_state_dict(load_file(str(wpath)))
        except RuntimeError as e:
            raise DetectorError(f"{wpath} does not match {cpath}: {e}") from e
        det = cls(cfg, model, device, min_regions, max_regions)
        if (p / TRAINING_NAME).is_file():
            det.train_info = json.loads((p / TRAINING_NAME).read_text())
        return det

    # -- inference -----------------------------------------------------------------------------

    def _to_tensors(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        out = []
        for img in images:
            if not isinstance(img, Image.Image):
                raise TypeError(f"extract expects PIL images, got {type(img).__name__}")
            t = pil_to_tensor(img.convert("RGB")).to(self.device, non_blocking=True)
            out.append(t.float().div_(255.0))
        return out

    def _heads(
        self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], sizes: list
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        rh = self.model.roi_heads
        feats = rh.box_head(rh.box_roi_pool(features, boxes, sizes))
        class_logits, box_reg = rh.box_predictor(feats)
        return feats, class_logits, box_reg, rh.attr_predictor(feats)

    def _select(
        self, keep: np.ndarray, score: np.ndarray, img: np.ndarray, n_images: int
    ) -> list[np.ndarray]:
        """Per image, the candidate indices to return (CPU bookkeeping on small arrays).

        ``keep``: NMS survivors in decreasing score order; ``score``/``img``: per candidate.
        Confident survivors first (at most ``max_regions``); below ``min_regions`` topped up with
        the next-best survivors, then with the remaining candidates by score.
        """
        thr = self.cfg.score_thresh
        out = []
        order_all = np.argsort(-score, kind="stable")
        for i in range(n_images):
            k_i = keep[img[keep] == i]
            conf = k_i[score[k_i] >= thr][: self.max_regions]
            if len(conf) < self.min_regions:
                rest = k_i[score[k_i] < thr]
                taken = np.zeros(len(score), dtype=bool)
                taken[k_i] = True
                extra = order_all[(img[order_all] == i) & ~taken[order_all]]
                conf = np.concatenate([conf, rest, extra])[: self.min_regions]
            out.append(conf.astype(np.int64))
        return out

    @torch.no_grad()
    def detect_tensors(self, images: Sequence[torch.Tensor], to_cpu: bool = False) -> list[Regions]:
        """Float images ``(3, H, W)`` in [0, 1] on ``self.device`` → one :class:`Regions` each.

        Everything after the RPN is batched over the images (one class-agnostic batched NMS, one
        host round trip for the selection), so the cost per image stays small on a GPU.
        ``to_cpu`` returns the regions on the CPU (one copy per batch, not per image).
        """
        model = self.model
        model.eval()
        if len(images) == 0:
            return []
        dev = images[0].device
        orig_sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in images]
        il, _ = model.transform(list(images))
        features = OrderedDict([("0", model.backbone(il.tensors))])
        proposals, _ = model.rpn(il, features)
        _, class_logits, box_reg, _ = self._heads(features, proposals, il.image_sizes)
        probs = F.softmax(class_logits.float(), -1)
        decoded = model.roi_heads.box_coder.decode(box_reg.float(), proposals)  # (P, C+1, 4)
        counts_p = torch.tensor([p.shape[0] for p in proposals], device=dev)
        img_idx = torch.repeat_interleave(torch.arange(len(proposals), device=dev), counts_p)
        score, cls = probs[:, 1:].max(1)
        box = decoded[torch.arange(decoded.shape[0], device=dev), cls + 1]
        hw = torch.tensor(il.image_sizes, device=dev, dtype=box.dtype)[img_idx]  # (P, 2) h, w
        zero = torch.zeros_like(box[:, 0])
        box = torch.stack(
            [
                torch.maximum(torch.minimum(box[:, 0], hw[:, 1]), zero),
                torch.maximum(torch.minimum(box[:, 1], hw[:, 0]), zero),
                torch.maximum(torch.minimum(box[:, 2], hw[:, 1]), zero),
                torch.maximum(torch.minimum(box[:, 3], hw[:, 0]), zero),
            ],
            1,
        )
        ok = (box[:, 2:] - box[:, :2]).min(1).values >= 2.0
        idx_ok = torch.nonzero(ok).flatten()
        keep = idx_ok[batched_nms(box[idx_ok], score[idx_ok], img_idx[idx_ok], self.cfg.nms_thresh)]
        sel = self._select(
            keep.cpu().numpy(), score.cpu().numpy(), img_idx.cpu().numpy(), len(proposals)
        )
        counts = [len(x) for x in sel]
        flat = torch.from_numpy(np.concatenate(sel)).to(dev)
        chosen = list(torch.split(box[flat], counts))
        whole = self.cfg.whole_image_region
        if whole:  # one more region per image: the whole (resized) picture, last
            full = [torch.tensor([[0.0, 0.0, s[1], s[0]]], device=dev) for s in il.image_sizes]
            chosen = [torch.cat([c, f.to(c.dtype)]) for c, f in zip(chosen, full)]
        feats, _, _, attr_logits = self._heads(features, chosen, il.image_sizes)
        attr_p, attr_i = F.softmax(attr_logits.float(), -1).max(1)
        # Boxes back to original pixels: per-region scale factors of its image.
        scale = torch.tensor(
            [[o[1] / r[1], o[0] / r[0]] for o, r in zip(orig_sizes, il.image_sizes)],
            device=dev,
            dtype=torch.float32,
        )
        if whole:
            counts = [n + 1 for n in counts]
        region_img = torch.repeat_interleave(
            torch.arange(len(counts), device=dev), torch.tensor(counts, device=dev)
        )
        boxes_out = torch.cat(chosen).float() * scale[region_img].repeat(1, 2)
        sc = score[flat].float()
        label_ids = cls[flat].tolist()  # one device→host copy for all names
        labels = [self.cfg.classes[c] for c in label_ids]
        if whole:  # the whole-image region: score 1, its own label, after each image's objects
            parts, lab, start = [], [], 0
            for n in counts:
                parts += [sc[start : start + n - 1], torch.ones(1, device=dev)]
                lab += labels[start : start + n - 1] + [WHOLE_IMAGE_LABEL]
                start += n - 1
            sc, labels = torch.cat(parts), lab
        feats, attr_p = feats.float(), attr_p.float()
        if to_cpu:
            boxes_out, sc, feats, attr_p = (t.cpu() for t in (boxes_out, sc, feats, attr_p))
        attr_ids = attr_i.tolist()
        out: list[Regions] = []
        start = 0
        for i, n in enumerate(counts):
            sl = slice(start, start + n)
            out.append(
                Regions(
                    boxes=boxes_out[sl],
                    features=feats[sl],
                    scores=sc[sl],
                    labels=labels[sl],
                    attributes=[self.cfg.attributes[a] for a in attr_ids[sl]],
                    attribute_scores=attr_p[sl],
                    image_size=(orig_sizes[i][1], orig_sizes[i][0]),
                )
            )
            start += n
        return out

    def extract(self, images: Sequence[Image.Image]) -> list[Regions]:
        """RGB PIL images (any size) → :class:`Regions` (on the CPU), in order."""
        return self.detect_tensors(self._to_tensors(images), to_cpu=True)
