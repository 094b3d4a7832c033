"""Image → regions → SHAN scores → per-step explanations: the demo's work, without any UI.

:class:`DemoPipeline` holds the two models loaded once at start (a region extractor and a SHAN
checkpoint) and answers two questions:

* :meth:`DemoPipeline.match` — one image, up to :data:`MAX_CAPTIONS` captions: rank the captions
  and explain every image–caption pair step by step (:class:`shan.explain.StepExplanation`).
* :meth:`DemoPipeline.compare` — one image, two captions: both explained, the words that differ
  and each step's part of the score gap (:class:`shan.explain.CaptionComparison`).
* :meth:`DemoPipeline.search` — several images, one caption: rank the images; any image's
  explanation on demand (:meth:`DemoPipeline.explain_image`).

Every result is a fresh object (no state kept between requests). User mistakes raise
:class:`InputError` with a message meant to be shown as is; harmless fixes (too many captions, a
huge image) are made and reported in the result's ``notices``.
"""

from __future__ import annotations

import io
import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from demo.card import ModelCard, read_card
from shan.data.vocab import Vocabulary
from shan.detect.base import RegionExtractor, Regions, stack_regions
from shan.device import resolve_device
from shan.errors import ShanError
from shan.evaluation import uses_geometry
from shan.explain import (
    CaptionComparison,
    StepExplanation,
    compare_explanations,
    from_model_explanation,
    score_margins,
)

log = logging.getLogger(__name__)

MAX_CAPTIONS = 10  # captions per match request
MAX_CAPTION_CHARS = 400  # characters kept per caption (the model also cuts to max_words tokens)
MAX_IMAGE_SIDE = 1024  # larger images are downscaled
MIN_IMAGE_SIDE = 32  # smaller images are enlarged (nearest neighbour) so they can be shown
MAX_SEARCH_IMAGES = 16
MAX_PIXELS = 36_000_000  # pixels in an image file's header; more is refused before decoding
MAX_ASPECT = 20  # long side / short side; thinner images are refused
MAX_CAPTION_TEXT = 20_000  # characters of caption text read at all (10 × 400 and room for spaces)


class InputError(ShanError, ValueError):
    """Input the demo cannot use; the message says what to change and is safe to show."""


class SetupError(ShanError, RuntimeError):
    """The models could not be loaded (missing checkpoint, bad detector weights, ...)."""


# --------------------------------------------------------------------------------------------
# Input cleaning


def load_image(source: Any, name: str | None = None) -> tuple[Image.Image, list[str]]:
    """Any image PIL can read → an RGB image of sensible size, plus notices about what was done.

    Handles file paths, encoded bytes (e.g. a pasted ``data:`` URL), ``PIL.Image`` and numpy
    arrays; EXIF orientation (``exif_transpose``); palette/alpha images (composited on white);
    16-bit and float grey images (contrast-stretched to 8 bit); images larger than
    :data:`MAX_IMAGE_SIDE` (downscaled) or smaller than :data:`MIN_IMAGE_SIDE` (enlarged).

    The size is judged from the file's header before any pixel is decoded
    (:func:`check_image_size`): more than :data:`MAX_PIXELS` pixels, or a side ratio beyond
    :data:`MAX_ASPECT`, is refused. ``name`` names the image in messages (default: the file name).

    Raises:
        InputError: no image given, a file that is not an image PIL can read, or one too large or
            too thin.
    """
    notices: list[str] = []
    if source is None:
        raise InputError("Please upload an image (or pick one of the examples).")
    if isinstance(source, Image.Image):
        im = source
        check_image_size(im.size, name or "The image")
    elif isinstance(source, np.ndarray):
        if source.ndim >= 2:
            check_image_size((int(source.shape[1]), int(source.shape[0])), name or "The image")
        try:
            im = Image.fromarray(source)
        except (TypeError, ValueError) as err:
            raise InputError(
                f"This array is not an image ({source.dtype}, {source.shape})."
            ) from err
    else:
        if isinstance(source, (bytes, bytearray)):
            name = name or "The pasted image"
            fp: Any = io.BytesIO(source)
        else:
            path = Path(str(source))
            name = name or repr(path.name)
            if not path.is_file():
                raise InputError(f"Image file {name} was not found.")
            fp = path
        im = _open_within_budget(fp, name)
    if getattr(im, "is_animated", False):
        im.seek(0)
        notices.append("Animated image: only its first frame is used.")
    try:
        im = ImageOps.exif_transpose(im) or im
    except Exception:  # a broken EXIF block is not worth failing for
        log.debug("exif_transpose failed", exc_info=True)
    im = _to_rgb(im)
    w, h = im.size
    if max(w, h) > MAX_IMAGE_SIDE:
        im = im.copy()
        im.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
        notices.append(f"The image ({w}×{h}) was downscaled to {im.size[0]}×{im.size[1]}.")
    elif min(w, h) < MIN_IMAGE_SIDE:
        f = MIN_IMAGE_SIDE / min(w, h)
        size = (min(MAX_IMAGE_SIDE, round(w * f)), min(MAX_IMAGE_SIDE, round(h * f)))
        im = im.resize(size, Image.Resampling.NEAREST)
        notices.append(
            f"The image is tiny ({w}×{h}); it was enlarged to {size[0]}×{size[1]} — "
            "expect little to be recognised."
        )
    return im, notices


def check_image_size(size: tuple[int, int], name: str = "The image") -> None:
    """Refuse an image of ``size = (width, height)`` that the app will not decode.

    Raises:
        InputError: more than :data:`MAX_PIXELS` pixels, an empty side, or a ratio of the long side
            to the short side above :data:`MAX_ASPECT`.
    """
    w, h = (int(v) for v in size)
    if w < 1 or h < 1:
        raise InputError(f"{name} has no pixels ({w}×{h}).")
    if w * h > MAX_PIXELS:
        raise InputError(
            f"{name} is {w}×{h} pixels ({w * h / 1e6:.0f} megapixels); this app reads images of "
            f"at most {MAX_PIXELS // 1_000_000} megapixels — please downscale it."
        )
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise InputError(
            f"{name} is {w}×{h} pixels, too thin to detect objects in; this app reads images "
            f"whose long side is at most {MAX_ASPECT}× the short side — please crop or pad it."
        )


def _open_within_budget(fp: Any, name: str) -> Image.Image:
    """Open an image file lazily, check its header size, then decode it (JPEGs at reduced scale
    when they will be downscaled anyway)."""
    try:
        with warnings.catch_warnings():
            # PIL warns between MAX_IMAGE_PIXELS and twice that; our own budget decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except Image.DecompressionBombError as err:
        raise InputError(
            f"{name} has too many pixels to process safely (at most "
            f"{MAX_PIXELS // 1_000_000} megapixels)."
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{name} is not an image this app can read (try a PNG or JPEG).") from err
    check_image_size(im.size, name)
    try:
        if im.format == "JPEG" and max(im.size) > 2 * MAX_IMAGE_SIDE:
            im.draft("RGB", (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))  # DCT scaling: decode less
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise InputError(
            f"{name} could not be decoded (a damaged or truncated file?); try a PNG or JPEG."
        ) from err
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode → RGB: alpha on white, high-bit-depth grey contrast-stretched to 8 bit."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode == "RGB":
            return im
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def parse_captions(
    text: str | Sequence[str] | None, max_captions: int = MAX_CAPTIONS
) -> tuple[list[str], list[str]]:
    """One caption per line → cleaned captions and notices.

    Blank lines are dropped, whitespace collapsed; more than ``max_captions`` keeps the first ones;
    a caption longer than :data:`MAX_CAPTION_CHARS` characters is cut.

    Raises:
        InputError: no caption left.
    """
    notices = []
    if text is None:
        lines: list[str] = []
    elif isinstance(text, str):
        if len(text) > MAX_CAPTION_TEXT:
            text = text[:MAX_CAPTION_TEXT]
            notices.append(
                f"The caption text is very long; only its first {MAX_CAPTION_TEXT} characters "
                "are read."
            )
        lines = text.splitlines()
    elif isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        lines = list(text)
    else:
        raise InputError("Captions must be text, one caption per line.")
    caps = [" ".join(line.split()) for line in lines]
    caps = [c for c in caps if c]
    if not caps:
        raise InputError("Please enter at least one caption (one per line).")
    if len(caps) > max_captions:
        notices.append(f"{len(caps)} captions given; only the first {max_captions} are scored.")
        caps = caps[:max_captions]
    for i, c in enumerate(caps):
        if len(c) > MAX_CAPTION_CHARS:
            caps[i] = c[:MAX_CAPTION_CHARS]
            notices.append(
                f"Caption {i + 1} is very long; only its first {MAX_CAPTION_CHARS} "
                "characters are used."
            )
    return caps, notices


def order_notices(words: Sequence[Sequence[str]], scores: np.ndarray) -> list[str]:
    """A notice for every two captions made of the same words in another order ("a red circle
    left of a blue square" / "a blue square left of a red circle"): only the order tells them
    apart, which a model matching words to regions may not read.

    Args:
        words: each caption's tokens; scores: ``(M, 4)``, column 0 the final score.
    """
    out = []
    seen: dict[tuple[str, ...], int] = {}
    for m, ws in enumerate(words):
        key = tuple(sorted(ws))
        first = seen.setdefault(key, m)
        if first != m and list(words[first]) != list(ws):
            a, b = float(scores[first, 0]), float(scores[m, 0])
            out.append(
                f"Captions {first + 1} and {m + 1} use the same words in another order "
                f"(S = {a:.3f} and {b:.3f}): only the order tells them apart. Whether the model "
                "reads order (relations, which colour goes with which shape) is in the banner "
                "above; the Compare tab's minimal pairs test it."
            )
    return out


def region_names(regions: Regions) -> list[str]:
    """``"red ball"``-style names: attribute + class (either may be empty)."""
    names = []
    for i in range(len(regions)):
        label = regions.labels[i] if i < len(regions.labels) else ""
        attr = regions.attributes[i] if i < len(regions.attributes) else ""
        name = " ".join(p for p in (str(attr).strip(), str(label).strip()) if p)
        names.append(name or f"region {i}")
    return names


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class MatchResult:
    """One image scored against several captions.

    Attributes:
        image: the RGB image the regions refer to (after cleaning).
        regions: the detector's output (CPU tensors).
        region_labels: ``k`` names (``attribute class``).
        captions: ``M`` captions as scored.
        scores: ``(M, 4)`` columns ``total, l2l, g2l, g2g``.
        order: caption indices, best first.
        explanations: ``M`` per-step explanations in caption order; ``None`` until computed
            (:meth:`DemoPipeline.explain`; :meth:`DemoPipeline.match` computes the best one).
        batch: the encoded captions (``TokenBatch``, CPU), kept to explain other captions later.
        notices: things the user should know (cut captions, unknown words, ...).
        timings: seconds spent in ``detect``, ``score``, ``explain``.
        calibration: the pipeline's :class:`shan.calibration.Calibration` (None: none saved).
    """

    image: Image.Image
    regions: Regions
    region_labels: list[str]
    captions: list[str]
    scores: np.ndarray
    order: list[int]
    explanations: list[StepExplanation | None]
    batch: Any = None
    notices: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    calibration: Any = None

    def display_words(self, m: int) -> list[str]:
        """Caption ``m``'s tokens as the model reads them, unknown ones marked ``word?``."""
        return [w + "?" if u else w for w, u in zip(self.batch.words[m], self.batch.unknown[m])]


@dataclass
class CompareResult:
    """One image, two captions, side by side.

    Attributes:
        match: the two captions scored and both explained (caption 0 is ``a``, caption 1 ``b``).
        comparison: ``a`` against ``b``: the words that differ, each step's margin, which steps
            caught the difference.
    """

    match: MatchResult
    comparison: CaptionComparison

    @property
    def notices(self) -> list[str]:
        return self.match.notices


@dataclass
class PairsResult:
    """A caption and its minimal pairs, scored on one image.

    Attributes:
        match: caption 0 is the given one, caption ``p + 1`` its perturbation ``p``.
        perturbations: ``P`` :class:`shan.data.perturb.Perturbation` (kind, text, changed token
            indices, note).
        weights: step → ``w_s`` (0 for a step switched off).
    """

    match: MatchResult
    perturbations: list[Any]
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def margins(self) -> np.ndarray:
        """``(P, 4)``: the given caption minus each perturbation, columns ``total, l2l, g2l,
        g2g`` (steps weighted): positive where that score prefers the given caption."""
        return -score_margins(self.match.scores, 0, self.weights)[1:]

    @property
    def notices(self) -> list[str]:
        return self.match.notices


@dataclass
class SearchResult:
    """One caption scored against several images.

    Attributes:
        caption: the caption as scored.
        images: ``N`` RGB images; ``names``: their file names.
        scores: ``(N, 4)`` columns ``total, l2l, g2l, g2g``.
        order: image indices, best first.
        explanations: ``N`` explanations of the caption with each image, ``None`` until computed
            (:meth:`DemoPipeline.explain_image`; :meth:`DemoPipeline.search` explains the best).
        regions: the ``N`` images' regions (CPU), kept to explain any image later.
        batch: the encoded caption (``TokenBatch``, CPU).
        calibration: the pipeline's calibration (None: none saved).
    """

    caption: str
    images: list[Image.Image]
    names: list[str]
    scores: np.ndarray
    order: list[int]
    explanations: list[StepExplanation | None]
    regions: list[Regions] = field(default_factory=list)
    batch: Any = None
    notices: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    calibration: Any = None

    @property
    def best(self) -> StepExplanation:
        """The explanation of the best image (always computed by the search)."""
        expl = self.explanations[self.order[0]]
        if expl is None:
            raise ValueError("the best image is not explained (DemoPipeline.explain_image)")
        return expl

    @property
    def best_image(self) -> Image.Image:
        return self.images[self.order[0]]


# --------------------------------------------------------------------------------------------
# The pipeline


def cpu_threads(concurrency: int, cpus: int | None = None) -> int:
    """Torch CPU threads per request so ``concurrency`` requests share the cores without
    oversubscription: ``max(1, cpus // concurrency)``.

    Oversubscribed OpenMP threads spin and wait on a busy machine: measured here on 2 shared
    cores, one match request took 1.8 s with 2 threads and 0.58 s with 1.
    """
    import os

    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // max(1, concurrency))


class DemoPipeline:
    """SHAN + a region extractor, loaded once, used read-only by every request.

    Args:
        model: a :class:`shan.model.shan.SHAN` in eval mode (``explain``, ``score``,
            ``encode_images``, ``encode_captions``).
        text: the checkpoint's text processor (``encode_batch(texts, max_words) -> TokenBatch``).
        extractor: any :class:`shan.detect.base.RegionExtractor`.
        device: where the model runs.
        description: a line saying what was loaded (shown in the app).
        model_card: Markdown describing the checkpoint (its ``README.md``), shown in the app.
        calibration: the checkpoint's :class:`shan.calibration.Calibration` (its scores on the
            true and non-matching pairs of a held-out split; None when it has none). Every
            result carries it, so the views can place a score among those pairs.
        card: what the model knows and does not (:class:`demo.card.ModelCard`, e.g.
            :func:`demo.card.read_card`); default: read from ``model_card``'s text.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        text: Any,
        extractor: RegionExtractor,
        device: torch.device | str = "cpu",
        description: str = "",
        model_card: str | None = None,
        calibration: Any = None,
        card: ModelCard | None = None,
    ) -> None:
        self.model = model.eval()
        self.model_card = model_card
        self.calibration = calibration
        self.card = card if card is not None else ModelCard.from_markdown(model_card)
        self.text = text
        self.extractor = extractor
        self.device = torch.device(device)
        self.cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
        self.max_words = int(getattr(self.cfg, "max_words", 64))
        self.step_weights = tuple(getattr(self.cfg, "step_weights", (1.0, 1.0, 1.0)))
        self.enabled = {
            "l2l": bool(getattr(self.cfg, "use_l2l", True)),
            "g2l": bool(getattr(self.cfg, "use_g2l", True)),
            "g2g": bool(getattr(self.cfg, "use_g2g", True)),
        }
        self.description = description

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        detector: str | None = None,
        detector_weights: str | Path | None = None,
        device: str = "auto",
    ) -> DemoPipeline:
        """Load a SHAN checkpoint (local dir or Hub repo id) and its region extractor with
        :func:`shan.load`.

        The detector defaults to the one the checkpoint names (its ``config.json`` extra);
        ``detector``/``detector_weights`` override.

        Raises:
            SetupError: with a one-line reason.
        """
        import shan
        from shan.checkpoint import DetectorLinkError
        from shan.detect.factory import KINDS

        try:
            dev = resolve_device(device)
        except ShanError as err:
            raise SetupError(str(err)) from err
        text = str(checkpoint)
        try:
            bundle = shan.load(text, dev, detector, detector_weights)
        except DetectorLinkError as err:
            log.debug("the detector could not be loaded", exc_info=True)
            if err.missing == "kind":
                raise SetupError(
                    f"checkpoint {text!r} names no detector; pass --detector "
                    f"{{{','.join(KINDS)}}} and --detector-weights"
                ) from err
            if err.missing == "weights":
                raise SetupError(
                    f"no weights for the {err.kind!r} detector; pass --detector-weights"
                ) from err
            raise SetupError(_one_line(err)) from err  # names the detector and the reason
        except Exception as err:  # one line for the user, the rest in the log
            log.debug("shan.load failed", exc_info=True)
            raise SetupError(f"could not load checkpoint {text!r}: {_one_line(err)}") from err
        path = bundle.checkpoint.path
        desc = f"SHAN checkpoint `{path}` · detector `{bundle.detector.kind}` · device `{dev}`"
        return cls(
            bundle.model,
            bundle.text,
            bundle.extractor,
            dev,
            desc,
            model_card=read_model_card(Path(path)),
            calibration=bundle.calibration,  # None when the checkpoint has no calibration.json
            card=read_card(Path(path), bundle.checkpoint.extra),
        )

    # ---- steps ------------------------------------------------------------------------------

    def detect(self, images: Sequence[Image.Image]) -> list[Regions]:
        """Run the region extractor; results on CPU.

        Raises:
            InputError: an image has no region.
        """
        regions = [r.to("cpu") for r in self.extractor.extract(list(images))]
        for i, r in enumerate(regions):
            if len(r) == 0:
                which = "this image" if len(regions) == 1 else f"image {i + 1}"
                raise InputError(f"The detector found no regions in {which}.")
        return regions

    def _detect_each(
        self, images: list[Image.Image], names: list[str], notices: list[str]
    ) -> tuple[list[Regions], list[int]]:
        """Detect regions in several images, skipping (with a notice naming it) any image the
        detector fails on or finds nothing in. Returns the regions and the kept indices.

        Raises:
            InputError: no image is left.
        """
        try:
            found: list[Regions | None] = [r.to("cpu") for r in self.extractor.extract(images)]
        except Exception:  # one bad image must not sink the others: retry them one by one
            log.warning("batched detection failed; retrying image by image", exc_info=True)
            found = []
            for im, name in zip(images, names):
                try:
                    found.append(self.extractor.extract([im])[0].to("cpu"))
                except Exception:
                    log.warning("detection failed on %s", name, exc_info=True)
                    notices.append(f"Skipped {name}: the detector could not process it.")
                    found.append(None)
        kept = []
        for i, (r, name) in enumerate(zip(found, names)):
            if r is not None and len(r) == 0:
                notices.append(f"Skipped {name}: the detector found no regions in it.")
            elif r is not None:
                kept.append(i)
        if not kept:
            raise InputError("The detector found no regions in any of the images.")
        return [found[i] for i in kept], kept  # type: ignore[misc]

    def _encode_text(self, captions: list[str]) -> Any:
        return self.text.encode_batch(captions, self.max_words)

    def _text_notices(self, batch: Any, captions: list[str]) -> list[str]:
        notices = []
        for m in range(len(captions)):
            name = f"Caption {m + 1}" if len(captions) > 1 else "The caption"
            if batch.truncated[m]:
                notices.append(
                    f"{name} is longer than {self.max_words} tokens; the rest is ignored."
                )
            unk = [w for w, u in zip(batch.words[m], batch.unknown[m]) if u]
            if unk and len(unk) == len(batch.words[m]):
                notices.append(
                    f"{name}: none of its words is in the model's vocabulary "
                    "(its score means little)."
                )
            elif unk:
                shown = ", ".join(f"“{w}”" for w in dict.fromkeys(unk))
                notices.append(f"{name}: unknown words {shown} (marked with ? below).")
        return notices

    @torch.inference_mode()
    def _score(self, regions: list[Regions], batch: Any) -> np.ndarray:
        """All image × caption scores: ``(N, M, 4)`` with ``total, l2l, g2l, g2g``."""
        if uses_geometry(self.model):  # boxes as fractions of each image, as in training
            feats, mask, boxes = stack_regions(regions, with_boxes=True)
            boxes = boxes.to(self.device)
        else:
            (feats, mask), boxes = stack_regions(regions), None
        img = self.model.encode_images(feats.to(self.device), mask.to(self.device), boxes)
        txt = self.model.encode_captions(batch.to(self.device))
        s = self.model.score(img, txt)
        return torch.stack([s.total, s.l2l, s.g2l, s.g2g], dim=-1).float().cpu().numpy()

    @torch.inference_mode()
    def _explain(self, regions: Regions, batch: Any, m: int, caption: str, image: Image.Image):
        feats = regions.features.float().to(self.device)
        length = int(batch.lengths[m])
        tokens = batch.tokens[m, :length].to(self.device)
        boxes = None
        if uses_geometry(self.model):  # boxes as fractions of the image, as in training
            boxes = stack_regions([regions], with_boxes=True)[2][0]
        expl = self.model.explain(feats, None, tokens, length, boxes=boxes)
        return from_model_explanation(
            expl,
            caption=caption,
            words=batch.words[m],
            unknown=batch.unknown[m],
            truncated=bool(batch.truncated[m]),
            boxes=regions.boxes,
            region_labels=region_names(regions),
            image_size=image.size,
            step_weights=self.step_weights,
            enabled=self.enabled,
        )

    def vocabulary(self) -> list[str] | None:
        """The words the model knows (its word vocabulary, without ``<pad>``/``<unk>``), or None
        for a word-piece tokenizer (which splits any word into known pieces)."""
        itos = getattr(self.text, "itos", None)
        if itos is None:
            return None
        return [w for w in itos if not (w.startswith("<") and w.endswith(">"))]

    # ---- the questions -----------------------------------------------------------------------

    def explain(self, result: MatchResult, m: int) -> StepExplanation:
        """The step-by-step explanation of caption ``m`` of ``result`` (computed once, then kept).

        Runs SHAN on the stored region features; the detector does not run again.
        """
        if not 0 <= m < len(result.captions):
            raise InputError("Pick one of the listed captions.")
        if result.explanations[m] is None:
            result.explanations[m] = self._explain(
                result.regions, result.batch, m, result.captions[m], result.image
            )
        return result.explanations[m]

    def match(
        self, image: Any, captions: str | Sequence[str], explain_all: bool = False
    ) -> MatchResult:
        """Rank captions for one image and explain the best pair (or every pair).

        Args:
            image: anything :func:`load_image` takes.
            captions: one per line (str) or a list.
            explain_all: explain every caption now instead of on demand (:meth:`explain`).

        Raises:
            InputError: unusable image or no caption.
        """
        caps, cap_notes = parse_captions(captions)
        img, notices = load_image(image)
        notices += cap_notes
        result = self._match(img, caps, notices, explain_all)
        result.notices += order_notices(result.batch.words, result.scores)
        return result

    def _match(
        self,
        img: Image.Image,
        caps: list[str],
        notices: list[str],
        explain_all: bool = False,
        text_notices: int | None = None,
    ) -> MatchResult:
        """:meth:`match` on a loaded image and cleaned captions; word notices only for the first
        ``text_notices`` captions (default: all)."""
        t0 = time.perf_counter()
        regions = self.detect([img])[0]
        t1 = time.perf_counter()
        batch = self._encode_text(caps)
        n = len(caps) if text_notices is None else text_notices
        notices += self._text_notices(batch.select(range(n)), caps[:n]) if n else []
        scores = self._score([regions], batch)[0]
        t2 = time.perf_counter()
        order = [int(i) for i in np.argsort(-scores[:, 0], kind="stable")]
        result = MatchResult(
            image=img,
            regions=regions,
            region_labels=region_names(regions),
            captions=caps,
            scores=scores,
            order=order,
            explanations=[None] * len(caps),
            batch=batch.to("cpu"),
            notices=notices,
            calibration=self.calibration,
        )
        for m in range(len(caps)) if explain_all else order[:1]:
            self.explain(result, m)
        t3 = time.perf_counter()
        result.timings = {"detect": t1 - t0, "score": t2 - t1, "explain": t3 - t2}
        return result

    def compare(self, image: Any, caption_a: Any, caption_b: Any) -> CompareResult:
        """One image, two captions (e.g. a true one and its hard negative), both explained.

        Raises:
            InputError: unusable image, a missing caption, or two captions the model reads as
                the same tokens.
        """
        caps, notices = [], []
        for name, text in (("first", caption_a), ("second", caption_b)):
            if text is None or (isinstance(text, str) and not text.strip()):
                raise InputError(f"Please enter the {name} caption (two captions to compare).")
            (cap,), notes = parse_captions(text, max_captions=1)
            if isinstance(text, str) and len(text.strip().splitlines()) > 1:
                notes = [n for n in notes if "only the first" not in n]
                notes.append(f"The {name} caption box holds several lines; only the first is used.")
            caps.append(cap)
            notices += notes
        words = self._encode_text(caps).words
        if words[0] == words[1]:
            raise InputError(
                "The two captions are the same as the model reads them (case and spacing are "
                "ignored); change a word in one of them."
            )
        result = self.match(image, caps, explain_all=True)
        result.notices[:0] = notices
        a, b = (self.explain(result, m) for m in (0, 1))  # already computed: explain_all
        return CompareResult(result, compare_explanations(a, b))

    def minimal_pairs(
        self, image: Any, caption: Any, seed: int = 0, kinds: Sequence[str] | None = None
    ) -> PairsResult:
        """A caption and its automatic minimal pairs (:func:`shan.data.perturb.perturb`: colour /
        shape / size swap, relation swap and opposite, count, word order — one of each that
        applies), all scored on one image.

        Toy-world shape words in the caption enable exact noun swaps among the toy world's
        shapes; other captions swap the heads of their phrases.

        Raises:
            InputError: unusable image, no caption, or a caption none of the perturbations
                applies to.
        """
        from shan.data.perturb import PERTURBATION_KINDS, WordLists, perturb
        from shan.data.vocab import tokenize
        from shan.toyworld.lexicon import PLURALS, SHAPE_WORDS

        if caption is None or (isinstance(caption, str) and not caption.strip()):
            raise InputError("Please enter a caption to make minimal pairs of.")
        (cap,), notices = parse_captions(caption, max_captions=1)
        shapes = {w for ws in SHAPE_WORDS.values() for w in ws}
        shapes |= {PLURALS.get(w, w + "s") for w in shapes}
        nouns = tuple(sorted(shapes)) if shapes & set(tokenize(cap)) else ()
        words = WordLists(nouns=nouns)
        if isinstance(self.text, Vocabulary):  # a word vocabulary: nothing it would read as <unk>
            words = words.restricted_to(self.text.__contains__)
        made = perturb(cap, seed=seed, words=words, kinds=kinds or PERTURBATION_KINDS)
        if not made:
            raise InputError(
                "No minimal pair can be made from this caption: it has no colour, shape, size, "
                "relation or count word to change (try “a red circle left of a blue square”)."
            )
        made = made[: MAX_CAPTIONS - 1]
        img, img_notes = load_image(image)
        result = self._match(
            img, [cap] + [p.text for p in made], img_notes + notices, text_notices=1
        )
        return PairsResult(result, made, self.weights())

    def weights(self) -> dict[str, float]:
        """``w_s`` of each step (0 for a step the model switches off)."""
        return {
            k: (float(w) if self.enabled.get(k, True) else 0.0)
            for k, w in zip(("l2l", "g2l", "g2g"), self.step_weights)
        }

    def explain_image(self, result: SearchResult, i: int) -> StepExplanation:
        """The explanation of the search caption with image ``i`` (computed once, then kept).

        Runs SHAN on the stored regions; the detector does not run again.
        """
        if not 0 <= i < len(result.images):
            raise InputError("Pick one of the ranked images.")
        if result.explanations[i] is None:
            result.explanations[i] = self._explain(
                result.regions[i], result.batch, 0, result.caption, result.images[i]
            )
        return result.explanations[i]

    def search(self, images: Sequence[Any], caption: str) -> SearchResult:
        """Rank images for one caption; explain the best pair.

        Unreadable files are skipped with a notice; more than :data:`MAX_SEARCH_IMAGES` keeps the
        first ones.

        Raises:
            InputError: no readable image, or no caption.
        """
        caps, notices = parse_captions(caption, max_captions=1)
        if (
            caption is not None
            and isinstance(caption, str)
            and len(caption.strip().splitlines()) > 1
        ):
            notices = [n for n in notices if "only the first" not in n]
            notices.append("Search uses one caption: only the first line is used.")
        items = [x for x in (images or []) if x is not None]
        if not items:
            raise InputError("Please upload at least one image to search.")
        if len(items) > MAX_SEARCH_IMAGES:
            notices.append(
                f"{len(items)} images given; only the first {MAX_SEARCH_IMAGES} are used."
            )
            items = items[:MAX_SEARCH_IMAGES]
        pics, names = [], []
        for x in items:
            in_memory = isinstance(x, (Image.Image, np.ndarray, bytes, bytearray))
            label = f"image {len(pics) + 1}" if in_memory else Path(str(x)).name
            try:
                im, notes = load_image(x, name=repr(label))
            except InputError as err:
                notices.append(f"Skipped: {err}")
                continue
            pics.append(im)
            names.append(label)
            notices += [f"{label}: {n}" for n in notes]
        if not pics:
            raise InputError("None of the uploaded files is an image this app can read.")
        t0 = time.perf_counter()
        regions, kept = self._detect_each(pics, names, notices)
        pics, names = [pics[i] for i in kept], [names[i] for i in kept]
        t1 = time.perf_counter()
        batch = self._encode_text(caps)
        notices += self._text_notices(batch, caps)
        scores = self._score(regions, batch)[:, 0, :]
        t2 = time.perf_counter()
        order = [int(i) for i in np.argsort(-scores[:, 0], kind="stable")]
        result = SearchResult(
            caption=caps[0],
            images=pics,
            names=names,
            scores=scores,
            order=order,
            explanations=[None] * len(pics),
            regions=regions,
            batch=batch.to("cpu"),
            notices=notices,
            calibration=self.calibration,
        )
        self.explain_image(result, order[0])
        t3 = time.perf_counter()
        result.timings = {"detect": t1 - t0, "score": t2 - t1, "explain": t3 - t2}
        return result


def read_model_card(checkpoint_dir: Path) -> str | None:
    """The checkpoint's ``README.md`` (or its parent folder's), without YAML front matter."""
    for cand in (checkpoint_dir / "README.md", checkpoint_dir.parent / "README.md"):
        if cand.is_file():
            text = cand.read_text(encoding="utf-8", errors="replace")
            if text.startswith("---"):
                end = text.find("\n---", 3)
                text = text[end + 4 :] if end > 0 else text
            return text.strip() or None
    return None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------------------------
# Examples


@dataclass
class Example:
    """One shipped example: an image, its true captions and a hard negative caption."""

    image: str
    captions: list[str]
    hard_negative: str | None = None

    @property
    def all_captions(self) -> list[str]:
        return self.captions + ([self.hard_negative] if self.hard_negative else [])


def load_examples(path: str | Path) -> list[Example]:
    """Read ``assets/examples.json``; image paths are resolved relative to the JSON's folder.

    Accepts a list of objects (or ``{"examples": [...]}``) with ``image`` (or ``file``/``path``),
    ``captions`` (or ``true_captions``) and ``hard_negative`` (or ``negative``/``hard_negatives``).
    Entries whose image file is missing are skipped. A missing file gives ``[]``.
    """
    p = Path(path)
    if not p.is_file():
        return []
    data = json.loads(p.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("examples", [])
    out = []
    for item in data:
        img = item.get("image") or item.get("file") or item.get("path")
        if not img:
            continue
        img_path = Path(img)
        if not img_path.is_absolute():
            cand = p.parent / img_path
            img_path = cand if cand.exists() else Path.cwd() / img_path
        if not img_path.is_file():
            log.warning("example image %s not found; skipped", img_path)
            continue
        caps = item.get("captions") or item.get("true_captions") or []
        if isinstance(caps, str):
            caps = [caps]
        neg = item.get("hard_negative") or item.get("negative") or item.get("hard_negatives")
        if isinstance(neg, list):
            neg = neg[0] if neg else None
        out.append(Example(str(img_path), [str(c) for c in caps], str(neg) if neg else None))
    return out


__all__ = [
    "CompareResult",
    "DemoPipeline",
    "Example",
    "InputError",
    "MatchResult",
    "PairsResult",
    "SearchResult",
    "SetupError",
    "load_examples",
    "load_image",
    "parse_captions",
    "region_names",
    "resolve_device",
    "cpu_threads",
]
