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
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
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


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallBackbone(nn.Module):
    """A few conv blocks: ``(B, 3, H, W)`` → ``(B, out_channels, H/s, W/s)``, ``s = Π strides``."""

    def __init__(
        self, widths: Sequence[int], out_channels: int, strides: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        strides = list(strides) if strides is not None else [2, 2, 2, 1][: len(widths)]
        if len(strides) != len(widths):
            raise DetectorError(f"{len(widths)} backbone widths but {len(strides)} strides")
        layers: list[nn.Module] = []
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
    backbone = SmallBackbone(cfg.widths, cfg.out_channels, cfg.strides)
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
        feats, _, _, attr_logits = self._heads(features, chosen, il.image_sizes)
        attr_p, attr_i = F.softmax(attr_logits.float(), -1).max(1)
        # Boxes back to original pixels: per-region scale factors of its image.
        scale = torch.tensor(
            [[o[1] / r[1], o[0] / r[0]] for o, r in zip(orig_sizes, il.image_sizes)],
            device=dev,
            dtype=torch.float32,
        )
        region_img = torch.repeat_interleave(
            torch.arange(len(counts), device=dev), torch.tensor(counts, device=dev)
        )
        boxes_out = box[flat].float() * scale[region_img].repeat(1, 2)
        sc, feats, attr_p = score[flat].float(), feats.float(), attr_p.float()
        if to_cpu:
            boxes_out, sc, feats, attr_p = (t.cpu() for t in (boxes_out, sc, feats, attr_p))
        label_ids = cls[flat].tolist()  # one device→host copy for all names
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
                    labels=[self.cfg.classes[c] for c in label_ids[sl]],
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


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


class ToyDetectionDataset(torch.utils.data.Dataset):
    """A toy-world split as detection targets: ``(image (3,H,W) uint8, target dict)``.

    ``target``: ``boxes`` (G, 4) float xyxy, ``labels`` (G,) int64 shape id + 1, ``attributes``
    (G,) int64 colour id. ``hflip`` mirrors images at random (shapes are left-right symmetric).

    ``mosaic = m > 1`` tiles ``m × m`` random scenes into one ``(3, m·S, m·S)`` training image
    (``len`` shrinks by ``m²``). torchvision's detector pays a fixed Python/launch cost per image
    in the RPN and RoI sampling; on a GPU that cost, not arithmetic, bounds training speed on
    small images, so mosaics train ``≈ m²`` times more scenes per second.
    """

    def __init__(
        self,
        split_dir: str | Path,
        classes: Sequence[str],
        colours: Sequence[str],
        hflip: bool = True,
        mosaic: int = 1,
    ) -> None:
        from shan.toyworld import load_annotations

        if mosaic < 1:
            raise DetectorError(f"mosaic must be >= 1, got {mosaic}")
        self.root = Path(split_dir)
        self.ann = load_annotations(self.root)
        self.cls = {c: i + 1 for i, c in enumerate(classes)}
        self.col = {c: i for i, c in enumerate(colours)}
        self.hflip = hflip
        self.mosaic = mosaic

    def __len__(self) -> int:
        return len(self.ann["images"]) // (self.mosaic**2)

    def _one(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rec = self.ann["images"][i]
        img = pil_to_tensor(Image.open(self.root / rec["file"]).convert("RGB"))
        boxes = torch.tensor([o["box"] for o in rec["objects"]], dtype=torch.float32).reshape(-1, 4)
        if self.hflip and torch.rand(()) < 0.5:
            img = img.flip(-1)
            w = img.shape[-1]
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        target = {
            "boxes": boxes,
            "labels": torch.tensor(
                [self.cls[o["shape"]] for o in rec["objects"]], dtype=torch.int64
            ),
            "attributes": torch.tensor(
                [self.col[o["colour"]] for o in rec["objects"]], dtype=torch.int64
            ),
        }
        return img, target

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        m = self.mosaic
        if m == 1:
            return self._one(i)
        # Tile i's own block of scenes, but in a random order, so each epoch sees new neighbours.
        n = len(self.ann["images"])
        idx = [(i * m * m + j) % n for j in range(m * m)]
        idx = [idx[j] for j in torch.randperm(m * m).tolist()]
        tiles = [self._one(j) for j in idx]
        h, w = tiles[0][0].shape[-2:]
        canvas = torch.zeros(3, m * h, m * w, dtype=torch.uint8)
        parts: dict[str, list[torch.Tensor]] = {"boxes": [], "labels": [], "attributes": []}
        for t, (img, tgt) in enumerate(tiles):
            if img.shape[-2:] != (h, w):
                raise DetectorError("mosaic training needs images of one size (toy-world scenes)")
            r, c = divmod(t, m)
            canvas[:, r * h : (r + 1) * h, c * w : (c + 1) * w] = img
            parts["boxes"].append(tgt["boxes"] + torch.tensor([c * w, r * h, c * w, r * h]))
            parts["labels"].append(tgt["labels"])
            parts["attributes"].append(tgt["attributes"])
        return canvas, {k: torch.cat(v) for k, v in parts.items()}


def _set_training_scale(model: FasterRCNN, cfg: ToyDetectorConfig, mosaic: int) -> None:
    """Input size and per-image proposal / sampling budgets for ``mosaic × mosaic`` tiles."""
    side = cfg.image_size * mosaic
    model.transform.min_size = (side,)
    model.transform.max_size = side
    area = mosaic * mosaic
    model.rpn._pre_nms_top_n["training"] = 600 * area
    model.rpn._post_nms_top_n["training"] = 200 * area
    model.rpn.fg_bg_sampler.batch_size_per_image = 128 * min(area, 2)
    model.roi_heads.fg_bg_sampler.batch_size_per_image = 128 * min(area, 2)


def _collate(batch: list) -> tuple[list, list]:
    return [b[0] for b in batch], [b[1] for b in batch]


def train_detector(
    train_dir: str | Path,
    out_dir: str | Path | None = None,
    epochs: int = 8,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    device: str | torch.device = "auto",
    num_workers: int = 4,
    cfg: ToyDetectorConfig | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    mosaic: int = 1,
) -> ToyDetector:
    """Train a :class:`ToyDetector` from scratch on a toy-world split; optionally save it.

    AdamW with linear warm-up and cosine decay; losses: RPN objectness + box, shape classifier +
    box regression, colour (attribute) cross-entropy. ``max_steps`` caps the total iterations
    (smoke tests); ``max_seconds`` is a wall-clock budget: the cosine schedule then follows
    ``max(step / total, elapsed / max_seconds)`` and training stops when either reaches 1, so a
    slower machine trains fewer steps but still anneals. ``mosaic = m`` trains on ``m × m`` tiles
    of scenes (see :class:`ToyDetectionDataset`; ``batch_size`` counts tiled images), with
    proposal and sampling budgets scaled by ``m²``; inference settings are restored afterwards.
    Returns the detector in eval mode.
    """
    from shan.toyworld import COLOURS, SHAPES

    torch.manual_seed(seed)
    dev = resolve_device(device)
    cfg = cfg or ToyDetectorConfig(classes=list(SHAPES), attributes=list(COLOURS))
    if not cfg.classes:
        cfg.classes = list(SHAPES)
    if not cfg.attributes:
        cfg.attributes = list(COLOURS)
    det = ToyDetector(cfg, device=dev)
    model = det.model
    ds = ToyDetectionDataset(train_dir, cfg.classes, cfg.attributes, mosaic=mosaic)
    if len(ds) == 0:
        raise DetectorError(f"too few training images in {train_dir} (mosaic {mosaic})")
    _set_training_scale(model, cfg, mosaic)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        collate_fn=_collate,
        drop_last=len(ds) > batch_size,
        pin_memory=dev.type == "cuda",
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
    total = epochs * len(loader)
    if max_steps is not None:
        total = min(total, max_steps)
    warmup = min(200, max(1, total // 10))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.train()
    step, t0 = 0, time.time()
    done = False
    for epoch in range(epochs):
        agg: dict[str, torch.Tensor] = {}
        n_agg = 0
        for images, targets in loader:
            # Progress drives the schedule: steps, or wall-clock time when max_seconds is set.
            progress = step / max(1, total)
            if max_seconds is not None:
                progress = max(progress, (time.time() - t0) / max_seconds)
            if progress >= 1.0:
                done = True
                break
            scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * progress))
            for group in opt.param_groups:
                group["lr"] = lr * scale
            images = [im.to(dev, non_blocking=True).float().div_(255.0) for im in images]
            targets = [{k: v.to(dev, non_blocking=True) for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            step += 1
            for k, v in losses.items():
                agg[k] = agg.get(k, 0.0) + v.detach()
            n_agg += 1
            if step % 50 == 0 and not torch.isfinite(loss.detach()):  # one sync per 50 steps
                raise DetectorError(f"detector loss became {float(loss)} at step {step}")
        if n_agg:
            parts = " ".join(
                f"{k.replace('loss_', '')}={float(v) / n_agg:.3f}" for k, v in agg.items()
            )
            took = time.time() - t0
            log(f"detector epoch {epoch + 1}/{epochs} step {step} {parts} ({took:.0f}s)")
        if done:
            break
    _set_training_scale(model, cfg, 1)
    model.eval()
    det.train_info = {
        "steps": step,
        "seconds": round(time.time() - t0, 1),
        "batch_size": batch_size,
        "mosaic": mosaic,
        "scenes": step * batch_size * mosaic * mosaic,
    }
    log(f"detector: {step} steps of {batch_size} images in {time.time() - t0:.0f}s")
    if out_dir is not None:
        det.save_pretrained(out_dir)
    return det
