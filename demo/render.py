"""Pictures for the demo, drawn with matplotlib's object API (``Figure`` + ``FigureCanvasAgg``).

Never ``pyplot``: every call builds its own ``Figure`` and returns a fresh ``uint8`` RGB numpy
array, so nothing is shared between concurrent requests. The numbers come from
:mod:`shan.explain` and :mod:`shan.calibration`; this module only draws them.

* **Attention pictures** — one colour map (:data:`HEAT_CMAP`) over the photo in grey, for every
  tab (Match, Search, and any later one): :func:`overlay` makes the pixels, :func:`heatmap_image`
  shows the photo beside them with a colour bar, :func:`heat_thumbnail` is its small version for
  galleries, :func:`context_regions_image` step 2's regions, :func:`matrix_image` the word ×
  region matrix, :func:`pair_heatmap` two words side by side (Compare).
* **Scores** — :func:`margins_chart` (each caption minus the best one, per step),
  :func:`evidence_chart` (each score among the true and non-matching pairs of a calibration),
  :func:`ranking_chart` (both in one picture), :func:`shares_chart` (step 3: shares of the score
  and parts of the gap), :func:`word_weights_chart` (step 2 on the words), :func:`compare_chart`
  (two captions: each step's part of the gap, both among the calibration's pairs).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps, font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

# ONE colour map for every attention picture (heatmaps, thumbnails, step 2, the word × region
# matrix): "inferno" from 0 to 0.9 — perceptually uniform and sequential, black → purple → red →
# orange → golden yellow, its lightness rising steadily, so "brighter = more attention" holds on
# any screen, in greyscale print and for colour-blind readers. It is drawn over a *desaturated,
# low-contrast* photo, so an object's own colour cannot pass for heat (a red circle at β = 0 looks
# dark, not hot). Against that grey every level except the very bottom is strongly coloured.
# The top 10 % of inferno is cut because it fades to a pale cream that, mixed with a grey photo,
# reads as khaki; at 0.9 the hot end is a saturated gold, the brightest and most colourful thing
# in the picture. Rejected: cividis (its middle is a near-neutral grey that vanishes into a grey
# photo), magma (its hot end is near-white, like a light grey photo), turbo/jet (rainbows: not
# ordered in lightness, so red and blue objects read as heat).
HEAT_CMAP_TOP = 0.9
HEAT_CMAP = ListedColormap(
    colormaps["inferno"](np.linspace(0.0, HEAT_CMAP_TOP, 256)), name="shan_heat"
)
HEAT_CMAP(0.0)  # build its lookup table now, not lazily inside concurrent requests
MATRIX_CMAP = HEAT_CMAP  # the word × region matrix uses the same map
HEAT_ALPHA = 0.75  # opacity of the colour map over the greyed photo
GREY_RANGE = (0.2, 0.6)  # the photo's luma mapped into this range beneath the heat
NO_REGION_GREY = (0.55, 0.8)  # outside every region: a lighter grey photo, hatched
HATCH_PERIOD, HATCH_WIDTH, HATCH_DARKEN = 7, 2, 0.18
STEP_COLORS = {"l2l": "#1f77b4", "g2l": "#ff7f0e", "g2g": "#2ca02c", "total": "#444444"}
STEP_LABELS = {
    "l2l": "S_L2L (step 1)",
    "g2l": "S_G2L (step 2)",
    "g2g": "S_G2G (step 3)",
    "total": "S (final)",
}
DPI = 100


def _figure(width: float, height: float) -> Figure:
    """A new figure with its own Agg canvas (inches at :data:`DPI`)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def to_array(fig: Figure) -> np.ndarray:
    """Draw ``fig`` and return its pixels as a fresh ``(H, W, 3)`` uint8 array."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Glyph ... missing from font" for CJK captions
        canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def shorten(text: str, width: int = 40) -> str:
    """Cut ``text`` to ``width`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _image_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _resize_heat(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Stretch an ``(h, w)`` map to ``size = (width, height)`` (nearest: keep box edges sharp)."""
    img = Image.fromarray(np.asarray(heat, dtype=np.float32), mode="F")
    return np.asarray(img.resize(size, Image.Resampling.NEAREST), dtype=np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` RGB in [0, 1] → ``(...)`` Rec. 601 luma in [0, 1]."""
    return rgb @ np.array([0.299, 0.587, 0.114])


def heat_colours(values: np.ndarray, luma: np.ndarray | float) -> np.ndarray:
    """The colour a heat value gets over a photo pixel of luma ``luma`` (both broadcastable).

    ``(1 - HEAT_ALPHA) · grey(luma) + HEAT_ALPHA · inferno(value)``, grey being the luma squeezed
    into :data:`GREY_RANGE`: the photo's own colour never reaches the result, and its lightness
    moves the result by at most ``(1 - HEAT_ALPHA) · (GREY_RANGE[1] - GREY_RANGE[0])`` (0.1).

    Returns:
        ``(..., 3)`` float RGB in [0, 1].
    """
    lo, hi = GREY_RANGE
    grey = (lo + (hi - lo) * np.asarray(luma, dtype=np.float64))[..., None]
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    colour = HEAT_CMAP(v)[..., :3]
    return (1.0 - HEAT_ALPHA) * grey + HEAT_ALPHA * colour


def no_region_colours(luma: np.ndarray) -> np.ndarray:
    """``(h, w)`` luma → ``(h, w, 3)``: a light grey photo with diagonal hatching ("no region")."""
    lo, hi = NO_REGION_GREY
    grey = lo + (hi - lo) * luma
    yy, xx = np.indices(luma.shape)
    grey = grey - HATCH_DARKEN * (((xx + yy) % HATCH_PERIOD) < HATCH_WIDTH)
    return np.repeat(grey[..., None], 3, axis=-1)


def overlay(image: Image.Image, heat: np.ndarray, max_side: int = 320) -> np.ndarray:
    """The attention picture: :data:`HEAT_CMAP` over the greyed, low-contrast photo, no axes.

    Every attention heatmap of the demo (Match, Compare, Search; big pictures and thumbnails)
    is made of these pixels. ``nan`` pixels (no region there: the model cannot see them) show the
    photo light grey and hatched, never a colour of the map.

    Args:
        image: the photo.
        heat: ``(h, w)`` values in [0, 1] (or ``nan``) covering the whole photo.
        max_side: longer side of the result in pixels.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    photo = image.convert("RGB")
    photo.thumbnail((max_side, max_side))
    luma = _luma(np.asarray(photo, dtype=np.float64) / 255.0)
    h = _resize_heat(heat, photo.size)
    missing = np.isnan(h)[..., None]
    out = np.where(missing, no_region_colours(luma), heat_colours(h, luma))
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def _photo_pixels(image: Image.Image, max_side: int) -> np.ndarray:
    photo = image.convert("RGB")
    photo.thumbnail((max_side, max_side))
    return np.asarray(photo)


@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Matplotlib's own DejaVu Sans at ``size`` px (the charts' font), for numpy-drawn pictures."""
    try:
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except OSError:  # pragma: no cover - matplotlib ships the font
        return ImageFont.load_default()


def heat_thumbnail(image: Image.Image, heat: np.ndarray, max_side: int = 150) -> np.ndarray:
    """A small attention picture: the photo | its heatmap | a colour bar labelled 1 · 0.5 · 0.

    The same pixels as :func:`heatmap_image` (:func:`overlay`), composed in numpy with PIL text,
    not matplotlib: a gallery holds one per word and must stay cheap.

    Args:
        heat: ``(h, w)`` map in [0, 1] (or ``nan``: no region) covering the photo.
        max_side: longer side of each of the two photo panels, in pixels.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    photo = _photo_pixels(image, max_side)
    hot = overlay(image, heat, max_side=max_side)
    h, w = hot.shape[:2]
    gap, bar_w, label_w, pad = 4, 10, 24, 6
    height = max(h, 64) + 2 * pad  # a flat photo still gets a readable bar
    canvas = np.full((height, 2 * w + 2 * gap + bar_w + label_w, 3), 255, dtype=np.uint8)
    top = (height - h) // 2
    canvas[top : top + h, :w] = photo
    canvas[top : top + h, w + gap : 2 * w + gap] = hot
    x0 = 2 * w + 2 * gap
    grad = np.linspace(1.0, 0.0, height - 2 * pad)[:, None]
    bar = (np.clip(heat_colours(grad, 0.5), 0, 1) * 255 + 0.5).astype(np.uint8)
    canvas[pad : height - pad, x0 : x0 + bar_w] = bar[:, None, 0, :]
    pic = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pic)
    draw.rectangle((0, top, w - 1, top + h - 1), outline=(187, 187, 187))  # white photo, white page
    font = _font(10)
    for value, text in ((1.0, "1"), (0.5, ".5"), (0.0, "0")):
        y = pad + (1.0 - value) * (height - 2 * pad - 1)
        draw.text((x0 + bar_w + 3, y), text, fill=(40, 40, 40), font=font, anchor="lm")
    return np.asarray(pic).copy()


def _draw_box(
    ax, box: Sequence[float], color: Any, label: str | None, lw: float = 2.0, label_bg: Any = None
) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=lw))
    if label:
        lo, hi = sorted(ax.get_xlim())
        right = x1 > lo + 0.55 * (hi - lo)  # a box on the right: label anchored at its right edge
        ax.text(
            x2 - 2 if right else x1 + 2,
            y1 + 2,
            label,
            color="white",
            fontsize=8,
            va="top",
            ha="right" if right else "left",
            clip_on=True,
            bbox={
                "facecolor": color if label_bg is None else label_bg,
                "alpha": 0.85,
                "pad": 1.5,
                "edgecolor": "none",
            },
        )


def _photo_figure(
    image: Image.Image,
    width: float,
    title_h: float = 0.4,
    cbar_w: float = 0.0,
    panels: int = 1,
    panel_title_h: float = 0.0,
    heats: Sequence[np.ndarray | None] | None = None,
) -> tuple[Figure, list, Any]:
    """A figure whose photo axes fit the image exactly (no empty bands).

    Args:
        width: width of the whole figure in inches (photo panels + colour bar column).
        title_h: inches reserved at the top for the figure title.
        cbar_w: inches reserved at the right for a colour bar (0: none).
        panels: photo panels side by side.
        panel_title_h: inches above each panel for its own title.
        heats: per panel, an ``(h, w)`` map in [0, 1] drawn with :func:`overlay`, or None for
            the original photo (composited in numpy at display size: one ``imshow`` per panel).

    Returns:
        ``(fig, photo_axes, colour_bar_rect or None)``; the rectangle is ``(left, bottom, width,
        height)`` in figure fractions, for :func:`_heat_colorbar`.
    """
    w, h = image.size
    gap = 0.1
    panel_w = (width - cbar_w - gap * (panels - 1)) / panels
    panel_h = max(0.6, panel_w * h / max(w, 1))
    if panel_h > 6.0:  # very tall images: shrink the panels instead of making a huge figure
        panel_h = 6.0
        panel_w = panel_h * w / max(h, 1)
    fig_w = panels * panel_w + gap * (panels - 1) + cbar_w
    fig_h = panel_h + title_h + panel_title_h + 0.05
    fig = _figure(fig_w, fig_h)
    side = int(max(panel_w, panel_h) * DPI * 1.25)  # no more pixels than are shown
    heats = [None] * panels if heats is None else list(heats)
    photo = _photo_pixels(image, side) if any(x is None for x in heats) else None
    axes = []
    for p, heat in enumerate(heats):
        pixels = photo if heat is None else overlay(image, heat, max_side=side)
        left = p * (panel_w + gap)
        ax = fig.add_axes((left / fig_w, 0.05 / fig_h, panel_w / fig_w, panel_h / fig_h))
        ax.imshow(pixels, interpolation="bilinear", extent=(0, w, h, 0))
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():  # a thin frame: a white photo on a white page
            spine.set_edgecolor("#bbbbbb")
            spine.set_linewidth(0.8)
        axes.append(ax)
    rect = None
    if cbar_w > 0:
        cx = panels * panel_w + gap * (panels - 1) + 0.2
        rect = (cx / fig_w, 0.05 / fig_h, 0.15 / fig_w, panel_h / fig_h)
    return fig, axes, rect


def _heat_colorbar(fig: Figure, rect: tuple[float, float, float, float], label: str) -> None:
    """The colour bar of an attention picture, in the colours actually drawn.

    The gradient is :func:`heat_colours` over a mid-grey photo (not the bare colour map, which
    the picture never shows), ticked 0 / 0.25 / … / 1; below it a hatched swatch reads
    "no region".
    """
    left, bottom, width, height = rect
    swatch_h = min(0.14 * height, 0.3 / fig.get_figheight())
    bar = fig.add_axes((left, bottom + swatch_h * 1.6, width, height - swatch_h * 1.6 - 0.02))
    grad = np.linspace(0.0, 1.0, 256)[:, None]
    bar.imshow(heat_colours(grad, 0.5), aspect="auto", origin="lower", extent=(0, 1, 0, 1))
    bar.set_xticks([])
    bar.yaxis.tick_right()
    bar.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    bar.set_yticklabels(["0", "0.25", "0.5", "0.75", "1"])
    bar.tick_params(labelsize=7)
    bar.yaxis.set_label_position("right")
    bar.set_ylabel(label, fontsize=8)
    sw = fig.add_axes((left, bottom, width, swatch_h))
    px = max(8, int(swatch_h * fig.get_figheight() * DPI))
    sw.imshow(no_region_colours(np.full((px, px), 0.5)), aspect="auto", interpolation="nearest")
    sw.set_xticks([])
    sw.set_yticks([])
    sw.text(1.25, 0.5, "no region", transform=sw.transAxes, fontsize=7, va="center")


def regions_image(
    image: Image.Image,
    boxes: np.ndarray,
    labels: Sequence[str],
    scores: Sequence[float] | None = None,
    max_boxes: int = 20,
    width: float = 6.0,
) -> np.ndarray:
    """The detector's regions: boxes with ``"#i attribute class 0.93"`` labels over the photo.

    Only the ``max_boxes`` most confident regions are drawn (region ``#i`` keeps its index so it
    can be found in the word × region matrix).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    k = len(boxes)
    conf = np.ones(k) if scores is None else np.asarray(scores, dtype=np.float64)
    order = np.argsort(-conf, kind="stable")[:max_boxes]
    fig, (ax,), _ = _photo_figure(image, width, title_h=0.35)
    palette = colormaps["tab20"]
    for rank, i in enumerate(order):
        text = f"#{i} {labels[i]}" + ("" if scores is None else f" {conf[i]:.2f}")
        _draw_box(ax, boxes[i], palette(rank % 20), text)
    shown = f"{len(order)} of {k}" if k > len(order) else f"{k}"
    fig.suptitle(
        f"Detected regions ({shown}): #index attribute class confidence",
        fontsize=10,
        va="top",
        y=1 - 0.06 / fig.get_figheight(),
    )
    return to_array(fig)


def heatmap_image(
    image: Image.Image,
    heat: np.ndarray,
    title: str,
    boxes: np.ndarray | None = None,
    top: Sequence[tuple[int, float]] = (),
    labels: Sequence[str] = (),
    cbar_label: str = "attention ÷ its peak",
    width: float = 8.5,
) -> np.ndarray:
    """The original photo beside its attention heatmap, with a colour bar; the ``top`` regions
    outlined on both and labelled with their weight on the heatmap.

    Args:
        heat: ``(h, w)`` map in [0, 1] covering the photo (see :func:`shan.explain.box_heatmap`).
        top: ``[(region index, weight), ...]`` to outline.
        labels: region names, indexed by region.
    """
    fig, axes, rect = _photo_figure(
        image, width, title_h=0.4, cbar_w=1.3, panels=2, heats=[None, heat]
    )
    w, h = image.size
    if boxes is not None:
        for rank, (i, wt) in reversed(list(enumerate(top))):  # the best one drawn last, on top
            name = labels[i] if i < len(labels) else ""
            _draw_box(axes[0], boxes[i], "white", f"{rank + 1}", 1.5, label_bg="black")
            _draw_box(
                axes[1],
                boxes[i],
                "#00e5ff",  # cyan: not a colour of the heat map
                f"{rank + 1}. #{i} {name} ({wt:.2f})",
                1.5,
                label_bg="black",
            )
    for ax in axes:
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
    _heat_colorbar(fig, rect, cbar_label)
    fig.suptitle(title, fontsize=10, va="top", y=1 - 0.06 / fig.get_figheight())
    return to_array(fig)


def matrix_image(
    weights: np.ndarray,
    words: Sequence[str],
    region_labels: Sequence[str],
    title: str,
    highlight_word: int | None = None,
    max_regions: int = 20,
    cbar_label: str = "β (each column sums to 1)",
    second: np.ndarray | None = None,
    second_title: str = "α: region → words (each row sums to 1)",
    first_title: str = "β: word → regions (each column sums to 1)",
) -> np.ndarray:
    """The word × region attention matrix (regions as rows, words as columns) with colour bars.

    With ``second`` (e.g. α, same shape) the two matrices are drawn side by side, sharing the
    region rows. Only the ``max_regions`` regions with the largest total weight are shown (in
    region order), so the matrix stays readable with 36 BUTD regions.
    """
    mats = [np.asarray(weights, dtype=np.float64)]
    if second is not None:
        mats.append(np.asarray(second, dtype=np.float64))
    k, n = mats[0].shape
    rows = np.arange(k)
    if k > max_regions:
        rows = np.sort(np.argsort(-mats[0].sum(1), kind="stable")[:max_regions])
    stacked = len(mats) > 1 and n > 14  # long captions: one matrix above the other
    per_word = 0.42 if not stacked else 0.24
    panel_w = min(6.0 if not stacked else 10.0, 0.9 + per_word * n)
    panel_h = 0.28 * len(rows) + 0.3
    label_w, cbar_w, below, above = 1.9, 1.0, 1.1, 0.35
    cols = 1 if stacked or len(mats) == 1 else len(mats)
    nrows = len(mats) if stacked else 1
    width = label_w + cols * (panel_w + cbar_w)
    height = 0.35 + nrows * (panel_h + below + above)
    fig = _figure(width, height)
    labels_w = [f"#{i} {shorten(region_labels[i], 18)}" for i in rows]
    for p, mat in enumerate(mats):
        sub = mat[rows]
        col, row = (0, p) if stacked else (p, 0)
        x0 = label_w + col * (panel_w + cbar_w)
        y0 = height - 0.35 - (row + 1) * (panel_h + below + above) + below
        ax = fig.add_axes((x0 / width, y0 / height, panel_w / width, panel_h / height))
        vmax = max(float(sub.max()), 1e-9)
        im = ax.imshow(sub, cmap=MATRIX_CMAP, aspect="auto", vmin=0.0, vmax=vmax)
        ax.set_xticks(range(n))
        fs = 8 if n <= 30 else 7
        ax.set_xticklabels([shorten(w, 14) for w in words], rotation=60, ha="right", fontsize=fs)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels_w if col == 0 else [], fontsize=7)
        ax.set_xlabel("words of the caption", fontsize=8)
        if col == 0:
            ax.set_ylabel("image regions", fontsize=8)
        if len(mats) > 1:
            ax.set_title(first_title if p == 0 else second_title, fontsize=8)
        if highlight_word is not None and 0 <= highlight_word < n:
            ax.add_patch(
                Rectangle(
                    (highlight_word - 0.5, -0.5),
                    1,
                    len(rows),
                    fill=False,
                    edgecolor="#00e5ff",  # cyan: not a colour of the map
                    lw=2,
                )
            )
        cax = fig.add_axes(
            ((x0 + panel_w + 0.12) / width, y0 / height, 0.14 / width, panel_h / height)
        )
        cb = fig.colorbar(im, cax=cax)
        if len(mats) == 1:
            cb.set_label(cbar_label, fontsize=8)
        cb.ax.tick_params(labelsize=7)
    note = f" (top {len(rows)} of {k} regions)" if len(rows) < k else ""
    fig.suptitle(title + note, fontsize=10, va="top", y=1 - 0.06 / height)
    return to_array(fig)


SCORE_KEYS = ("total", "l2l", "g2l", "g2g")  # the columns of a (M, 4) score table
# true pairs / non-matching pairs: colours no step uses (the steps are blue, orange, green, grey)
MATCH_COLOR, NONMATCH_COLOR = "#7b3294", "#ababab"
MARGIN_LINEAR = 0.01  # margins chart: linear within ±this, logarithmic beyond (symlog)


def _draw_margins(ax, captions: Sequence[str], sc: np.ndarray, labels: bool = True) -> None:
    """Grouped bars: each caption's S and step scores minus the best caption's (row 0)."""
    m = len(captions)
    y = np.arange(m)
    bar_h = 0.2
    vals = sc - sc[0]
    for c, key in enumerate(SCORE_KEYS):
        ax.barh(
            y + (c - 1.5) * bar_h,
            vals[:, c],
            height=bar_h,
            color=STEP_COLORS[key],
            label=STEP_LABELS[key],
        )
    ax.set_yticks(y)
    if labels:
        names = [f"{i + 1}. {shorten(t, 34)}" for i, t in enumerate(captions)]
        names[0] += "  (the best)"
        ax.set_yticklabels(names, fontsize=8)
    else:
        ax.set_yticklabels([])
    ax.set_ylim(m - 0.5, -0.5)
    big = float(np.abs(vals).max())
    lim = max(big, 1e-3) * 1.3
    if big > 10 * MARGIN_LINEAR:  # small and large gaps together: enlarge the small ones
        ax.set_xscale("symlog", linthresh=MARGIN_LINEAR, linscale=0.6)
        ticks = [t for t in (0.01, 0.1, 1.0, 10.0) if t <= lim]
        ticks = [-t for t in reversed(ticks)] + [0.0] + ticks
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:+g}" if t else "0" for t in ticks])
        ax.minorticks_off()
        xlabel = f"minus the best caption's score (linear within ±{MARGIN_LINEAR}, log beyond)"
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, symmetric=True))
        xlabel = "score minus the best caption's score"
    ax.set_xlim(-lim, lim)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    if m == 1:
        ax.text(
            0.5,
            0.85,
            "one caption: nothing to compare",
            transform=ax.transAxes,
            ha="center",
            fontsize=8,
            color="#555555",
        )


def _draw_box_strip(ax, step: Any, population: str, y: float, color: str) -> None:
    """A thin box plot of one population of a ``StepCalibration``: 1–99 % line, 25–75 % box,
    median bar."""
    lo, q25, med, q75, hi = (step.quantile(f, population) for f in (0.01, 0.25, 0.5, 0.75, 0.99))
    ax.plot([lo, hi], [y, y], color=color, lw=1.2, solid_capstyle="butt")
    ax.add_patch(Rectangle((q25, y - 0.13), max(q75 - q25, 1e-9), 0.26, color=color, lw=0))
    ax.plot([med, med], [y - 0.17, y + 0.17], color="black", lw=1.2)


def _draw_evidence(
    fig: Figure,
    rect: tuple[float, float, float, float],
    sc: np.ndarray,
    calibration: Any,
    ticks: Sequence[str] | None = None,
) -> None:
    """One row per score: the captions' scores (ticks labelled ``ticks``, default 1 … M; the
    first one black and bold) on the two distributions."""
    ticks = [str(i + 1) for i in range(len(sc))] if ticks is None else list(ticks)
    left, bottom, width, height = rect
    rows = len(SCORE_KEYS)
    row_h = height / rows
    for r, key in enumerate(SCORE_KEYS):
        ax = fig.add_axes(
            (left, bottom + (rows - 1 - r) * row_h + 0.28 * row_h, width, 0.6 * row_h)
        )
        vals = sc[:, SCORE_KEYS.index(key)]
        step = None if calibration is None else calibration.steps.get(key)
        span = list(vals)
        note = ""
        if step is not None and step.available:
            _draw_box_strip(ax, step, "match", 0.3, MATCH_COLOR)
            _draw_box_strip(ax, step, "nonmatch", -0.3, NONMATCH_COLOR)
            span += [step.quantile(f, pop) for f in (0.01, 0.99) for pop in ("match", "nonmatch")]
            note = f"AUC {step.auc:.2f}" if step.auc is not None else ""
        elif step is not None and not step.enabled:
            note = "switched off"
        elif step is not None:
            note = "too few pairs"
        lo, hi = min(span), max(span)
        pad = max(hi - lo, 1e-3) * 0.08
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(-0.75, 1.05)
        for i, v in reversed(list(enumerate(vals))):  # the best caption drawn last, on top
            best = i == 0
            ax.plot(
                [v, v],
                [-0.55, 0.55],
                color="black" if best else "#d62728",
                lw=2.0 if best else 1.0,
                zorder=3,
            )
            ax.text(
                v,
                0.62 + 0.2 * (i % 2),
                ticks[i],
                ha="center",
                va="bottom",
                fontsize=7,
                color="black" if best else "#d62728",
                fontweight="bold" if best else "normal",
            )
        ax.set_yticks([])
        ax.tick_params(axis="x", labelsize=7, pad=1)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.ticklabel_format(axis="x", useOffset=False)  # an offset label would be cut off
        for side in ("left", "right", "top"):
            ax.spines[side].set_visible(False)
        ax.text(
            -0.02,
            0.5,
            STEP_LABELS[key].replace(" (", "\n("),
            transform=ax.transAxes,
            ha="right",
            va="center",
            fontsize=8,
            color=STEP_COLORS[key],
        )
        if note:
            ax.text(
                1.01,
                0.5,
                note,
                transform=ax.transAxes,
                ha="left",
                va="center",
                fontsize=7,
                color="#555555",
            )


def evidence_legend(calibration: Any, ticks: str = "the captions, 1 = the best") -> str:
    """The two lines above the evidence panel: what the strips are, or that there are none."""
    if calibration is None:
        return "no calibration saved with this model:\nraw scores only — compare the captions"
    src = calibration.source
    n = f", {src['n_images']} images" if "n_images" in src else ""
    return (
        f"purple: true pairs · grey: non-matching pairs ({src.get('split', 'test')} split{n})\n"
        f"box 25–75 %, line 1–99 %, black bar: median · ticks: {ticks}"
    )


def _evidence_header(
    fig: Figure,
    x: float,
    y_title: float | None,
    y_legend: float,
    calibration: Any,
    ticks: str = "the captions, 1 = the best",
) -> None:
    """The evidence panel's heading (optional) and its two-line legend, centred on ``x``."""
    if y_title is not None:
        fig.text(
            x, y_title, "each score among true and non-matching pairs", ha="center", fontsize=9
        )
    fig.text(
        x,
        y_legend,
        evidence_legend(calibration, ticks),
        ha="center",
        va="top",
        fontsize=7,
        color="#555555",
    )


def ranking_chart(
    captions: Sequence[str],
    scores: np.ndarray,
    calibration: Any = None,
    title: str = "The ranking: margins to the best caption, and each score as evidence",
) -> np.ndarray:
    """Left: :func:`margins_chart`'s bars; right: :func:`evidence_chart`'s rows, in one picture.

    Args:
        captions: ``M`` captions, best first.
        scores: ``(M, 4)`` columns ``total, l2l, g2l, g2g`` in the same order.
        calibration: a :class:`shan.calibration.Calibration` or None (raw scores only, said so).
    """
    sc = np.asarray(scores, dtype=np.float64).reshape(-1, 4)
    m = len(captions)
    fig_w = 13.5
    fig_h = max(4.6, 1.9 + 0.55 * m)
    fig = _figure(fig_w, fig_h)
    ax = fig.add_axes((3.2 / fig_w, 0.75 / fig_h, 3.9 / fig_w, 1 - 1.85 / fig_h))
    _draw_margins(ax, captions, sc)
    ax.set_title("margins to the best caption, per step", fontsize=9)
    fig.legend(
        *ax.get_legend_handles_labels(),
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(5.15 / fig_w, 1 - 0.38 / fig_h),
        ncol=4,
        frameon=False,
    )
    _draw_evidence(fig, (8.5 / fig_w, 0.45 / fig_h, 4.0 / fig_w, 1 - 1.6 / fig_h), sc, calibration)
    _evidence_header(fig, (8.5 + 2.0) / fig_w, 1 - 0.62 / fig_h, 1 - 0.8 / fig_h, calibration)
    fig.suptitle(title, fontsize=10, va="top", y=1 - 0.05 / fig_h)
    return to_array(fig)


def margins_chart(
    captions: Sequence[str],
    scores: np.ndarray,
    title: str = "Margins to the best caption, per step",
) -> np.ndarray:
    """Each caption's final and step scores minus the best caption's (best first: row 0).

    A true caption and its hard negative differ by little in S; the bars show which step makes
    the difference, whatever that step's share of the score.
    """
    sc = np.asarray(scores, dtype=np.float64).reshape(-1, 4)
    m = len(captions)
    fig_w, fig_h = 7.5, 1.5 + 0.55 * m
    fig = _figure(fig_w, fig_h)
    ax = fig.add_axes((2.9 / fig_w, 0.75 / fig_h, 4.3 / fig_w, 1 - 1.4 / fig_h))
    _draw_margins(ax, captions, sc)
    fig.legend(
        *ax.get_legend_handles_labels(),
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.3 / fig_h),
        ncol=4,
        frameon=False,
    )
    fig.suptitle(title, fontsize=10, va="top", y=1 - 0.05 / fig_h)
    return to_array(fig)


def evidence_chart(
    scores: np.ndarray,
    calibration: Any = None,
    title: str = "Each score among true and non-matching pairs",
) -> np.ndarray:
    """Each caption's final and step scores (ticks numbered 1 … M, best first) on the matching
    and non-matching distributions saved with the model (thin box plots, purple and grey).

    Args:
        scores: ``(M, 4)`` columns ``total, l2l, g2l, g2g``, best caption first.
        calibration: a :class:`shan.calibration.Calibration`, or None: only the ticks, and the
            chart says that no calibration was saved.
    """
    sc = np.asarray(scores, dtype=np.float64).reshape(-1, 4)
    fig_w, fig_h = 6.5, 4.0
    fig = _figure(fig_w, fig_h)
    _draw_evidence(fig, (1.3 / fig_w, 0.2 / fig_h, 4.3 / fig_w, 1 - 0.95 / fig_h), sc, calibration)
    _evidence_header(fig, 0.5, None, 1 - 0.42 / fig_h, calibration)
    fig.suptitle(title, fontsize=10, va="top", y=1 - 0.05 / fig_h)
    return to_array(fig)


def word_weights_chart(
    words: Sequence[str],
    gamma: np.ndarray,
    txt_pool: np.ndarray,
    title: str = "Step 2 on the words",
    note: str = "",
    uniform_pool: bool | None = None,
) -> np.ndarray:
    """Bars of γ (image context → word attention) per word, the tallest labelled with its value;
    the text pooling weights as bars too, or — when they are all equal — one dashed line at 1/n
    saying so (equal bars would look like information).

    Args:
        note: a line under the title (e.g. :func:`demo.explain_text.step2_words_note`).
        uniform_pool: whether the pooling weights count as all equal (default: within 2 %).
    """
    gamma = np.asarray(gamma, dtype=np.float64)
    pool = np.asarray(txt_pool, dtype=np.float64)
    n = len(words)
    if uniform_pool is None:
        uniform_pool = bool(pool.size and pool.max() - pool.min() <= 0.02 * max(pool.max(), 1e-12))
    width = min(14.0, 2.5 + 0.5 * n if n <= 14 else 2.5 + 0.25 * n)
    fig = _figure(width, 3.4)
    ax = fig.add_axes((0.8 / width, 0.3, 1 - 1.0 / width, 0.5))
    x = np.arange(n)
    bw = 0.8 if uniform_pool else 0.4
    ax.bar(
        x - (0 if uniform_pool else 0.2),
        gamma,
        width=bw,
        color="#ff7f0e",
        label="γ: image context → word",
    )
    if uniform_pool:
        level = float(pool.mean()) if pool.size else 0.0
        ax.axhline(
            level,
            color="#9467bd",
            ls="--",
            lw=1.2,
            label=f"text pooling weight: all equal (1/{n} = {level:.3f})",
        )
    else:
        ax.bar(x + 0.2, pool, width=0.4, color="#9467bd", label="text pooling weight (forms t_c)")
    if n:
        j = int(np.argmax(gamma))
        ax.annotate(
            f"{gamma[j]:.2f}",
            (j - (0 if uniform_pool else 0.2), gamma[j]),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            fontsize=7,
        )
        ax.set_ylim(0, max(float(gamma.max()), float(pool.max()) if pool.size else 0) * 1.18 + 1e-6)
    ax.set_xticks(x)
    ax.set_xticklabels(
        [shorten(w, 14) for w in words], rotation=60, ha="right", fontsize=8 if n <= 30 else 7
    )
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("weight (each kind sums to 1)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10, y=0.98)
    if note:
        fig.text(0.5, 0.86, note, ha="center", fontsize=8, color="#333333")
    return to_array(fig)


def context_regions_image(
    image: Image.Image,
    delta_heat: np.ndarray,
    pool_heat: np.ndarray,
    titles: Sequence[str] = (
        "δ: text context t_c → regions",
        "pooling weights that form the image context v_c",
    ),
    width: float = 11.0,
) -> np.ndarray:
    """Step 2 on the image: the photo, δ (text context → regions) and the image pooling weights,
    side by side with one colour bar."""
    fig, axes, rect = _photo_figure(
        image,
        width,
        title_h=0.1,
        cbar_w=1.3,
        panels=3,
        panel_title_h=0.3,
        heats=[None, delta_heat, pool_heat],
    )
    for ax, ttl in zip(axes, ("the photo", *titles)):
        ax.set_title(ttl, fontsize=8)
    _heat_colorbar(fig, rect, "weight ÷ its peak")
    return to_array(fig)


def shares_chart(
    contributions: dict[str, float],
    shares: dict[str, float],
    total: float,
    title: str = "Step 3: how the final score is built",
    margins: dict[str, float] | None = None,
    reference: str = "",
    stacked: bool = False,
) -> np.ndarray:
    """Left: each step's contribution ``w_s · S_s`` to the final score, with its share in percent.
    Right (with ``margins``): each step's part of the gap to the ``reference`` caption — what
    separates the two, which a share of the score does not show. ``stacked``: the two panels one
    above the other (a narrow column).
    """
    keys = ("l2l", "g2l", "g2g")
    two = margins is not None
    rows = 2 if two and stacked else 1
    fig_w = 11.0 if two and not stacked else 7.0
    fig_h = 3.0 if rows == 1 else 3.8
    fig = _figure(fig_w, fig_h)
    names = [STEP_LABELS[k] for k in keys] + [STEP_LABELS["total"]]
    colors = [STEP_COLORS[k] for k in keys] + [STEP_COLORS["total"]]
    panels = [
        (
            [contributions.get(k, 0.0) for k in keys] + [total],
            [f"  ({100 * shares.get(k, 0):.0f}%)" for k in keys] + [""],
            "contribution w·S to the final score (share of |w·S|)",
            "what each step adds to S",
        )
    ]
    if two:
        gap = sum(margins.get(k, 0.0) for k in keys)
        # "% of the gap" only when every step pushes the same way (else it exceeds 100 %)
        same_way = abs(gap) > 1e-12 and all(margins.get(k, 0.0) * gap >= 0 for k in keys)
        pcts = [f"  ({100 * margins.get(k, 0.0) / gap:.0f}%)" if same_way else "" for k in keys]
        panels.append(
            (
                [margins.get(k, 0.0) for k in keys] + [gap],
                pcts + [""],
                "this caption minus the other, per step (part of the gap)",
                f"…and the gap to “{shorten(reference, 38)}”",
            )
        )
    cols = len(panels) // rows
    width = (fig_w - 1.6 - (0.5 if cols > 1 else 0.0)) / cols
    row_h = (fig_h - 0.3) / rows
    for p, (values, extra, xlabel, sub) in enumerate(panels):
        col, row = (0, p) if rows > 1 else (p, 0)
        x0 = 1.4 + col * (width + 0.5)
        if rows == 1:
            y0, h = 0.6, 1.74
        else:
            y0, h = fig_h - 0.3 - (row + 1) * row_h + 0.5, row_h - 0.8
        ax = fig.add_axes((x0 / fig_w, y0 / fig_h, (width - 0.2) / fig_w, h / fig_h))
        y = np.arange(4)
        ax.barh(y, values, color=colors)
        for yi, (v, e) in enumerate(zip(values, extra)):
            ax.text(
                v, yi, f" {v:+.3f}{e} ", va="center", ha="left" if v >= 0 else "right", fontsize=8
            )
        ax.set_yticks(y)
        ax.set_yticklabels(names if col == 0 else [], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.8)
        lim = max(1e-3, max(abs(v) for v in values)) * 1.6
        ax.set_xlim(-lim if min(values) < 0 else 0, lim)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_title(sub, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return to_array(fig)


def pair_heatmap(
    image: Image.Image,
    heats: Sequence[np.ndarray | None],
    titles: Sequence[str],
    boxes: np.ndarray | None = None,
    tops: Sequence[Sequence[tuple[int, float]]] = ((), ()),
    labels: Sequence[str] = (),
    cbar_label: str = "β of the box ÷ the peak β",
    width: float = 8.5,
) -> np.ndarray:
    """Two attention pictures of the same photo side by side, one colour bar (Compare: a word of
    caption A beside the word that replaced it in caption B).

    Args:
        heats: two ``(h, w)`` maps in [0, 1] (``nan``: no region), or None for the plain photo.
        titles: one per panel.
        tops: per panel, ``[(region index, weight)]`` to outline.
    """
    fig, axes, rect = _photo_figure(
        image, width, title_h=0.1, cbar_w=1.3, panels=2, panel_title_h=0.3, heats=list(heats)
    )
    w, h = image.size
    for ax, title, top in zip(axes, titles, tops):
        ax.set_title(title, fontsize=9)
        if boxes is None:
            continue
        for i, wt in reversed(list(top)):  # the best one drawn last, on top
            name = labels[i] if i < len(labels) else ""
            _draw_box(ax, boxes[i], "#00e5ff", f"#{i} {name} ({wt:.2f})", 1.5, label_bg="black")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
    _heat_colorbar(fig, rect, cbar_label)
    return to_array(fig)


def compare_chart(
    scores: np.ndarray,
    margins: dict[str, float],
    calibration: Any = None,
    title: str = "Caption A against caption B, step by step",
) -> np.ndarray:
    """Left: each step's part of the gap ``w_s (S_s(A) − S_s(B))`` and the gap in S, as bars
    (right of zero: the step prefers A); right: A's and B's scores among the true and
    non-matching pairs of the calibration (ticks ``A`` and ``B``).

    Args:
        scores: ``(2, 4)`` rows A and B, columns ``total, l2l, g2l, g2g``.
        margins: ``total``/``l2l``/``g2l``/``g2g`` → A − B (steps weighted).
    """
    sc = np.asarray(scores, dtype=np.float64).reshape(-1, 4)
    fig_w, fig_h = 12.5, 3.6
    fig = _figure(fig_w, fig_h)
    ax = fig.add_axes((1.55 / fig_w, 0.65 / fig_h, 4.6 / fig_w, 1 - 1.35 / fig_h))
    keys = ("l2l", "g2l", "g2g", "total")
    vals = [float(margins.get(k, 0.0)) for k in keys]
    y = np.arange(len(keys))
    ax.barh(y, vals, color=[STEP_COLORS[k] for k in keys], height=0.6)
    lim = max(1e-3, max(abs(v) for v in vals)) * 1.7
    for yi, v in enumerate(vals):
        side = "A" if v > 0 else ("B" if v < 0 else "—")
        text = f"{v:+.3f}" if abs(v) >= 0.01 or v == 0 else f"{v:+.1e}"
        ax.text(
            v, yi, f" {text} → {side} ", va="center", ha="left" if v >= 0 else "right",
            fontsize=8,
        )  # fmt: skip
    ax.set_yticks(y)
    ax.set_yticklabels([STEP_LABELS[k] for k in keys], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-lim, lim)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("A − B (w·ΔS): right of 0 the step prefers A, left of 0 B", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("which step caught the difference?", fontsize=9)
    _draw_evidence(
        fig, (7.9 / fig_w, 0.35 / fig_h, 3.9 / fig_w, 1 - 1.5 / fig_h), sc, calibration, ["A", "B"]
    )
    _evidence_header(
        fig, (7.9 + 1.95) / fig_w, 1 - 0.55 / fig_h, 1 - 0.72 / fig_h, calibration, "A and B"
    )
    fig.suptitle(title, fontsize=10, va="top", y=1 - 0.05 / fig_h)
    return to_array(fig)


__all__ = [
    "HEAT_CMAP",
    "compare_chart",
    "context_regions_image",
    "evidence_chart",
    "evidence_legend",
    "heat_colours",
    "heat_thumbnail",
    "heatmap_image",
    "margins_chart",
    "matrix_image",
    "no_region_colours",
    "overlay",
    "pair_heatmap",
    "ranking_chart",
    "regions_image",
    "shares_chart",
    "shorten",
    "to_array",
    "word_weights_chart",
]
