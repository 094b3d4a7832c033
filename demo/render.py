"""Pictures for the demo, drawn with matplotlib's object API (``Figure`` + ``FigureCanvasAgg``).

Never ``pyplot``: every call builds its own ``Figure`` and returns a fresh ``uint8`` RGB numpy
array, so nothing is shared between concurrent requests. The numbers come from
:mod:`shan.explain`; this module only draws them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image

HEAT_CMAP = "turbo"  # attention heatmaps over the photo: blue = ignored, red = attended
MATRIX_CMAP = "viridis"  # word × region matrix
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


def overlay(
    image: Image.Image,
    heat: np.ndarray,
    cmap: str = HEAT_CMAP,
    alpha: float = 0.6,
    max_side: int = 320,
) -> np.ndarray:
    """Fast colour-mapped heat over a (downscaled) photo, without axes.

    ``nan`` pixels (no region there: the model cannot see them) show the photo greyed out.

    Args:
        image: the photo.
        heat: ``(h, w)`` values in [0, 1] (or ``nan``) covering the whole photo.
        alpha: opacity of the colour map.
        max_side: longer side of the result in pixels.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    photo = image.convert("RGB")
    photo.thumbnail((max_side, max_side))
    base = np.asarray(photo, dtype=np.float32) / 255.0
    h = _resize_heat(heat, photo.size)
    missing = np.isnan(h)[..., None]
    colour = colormaps[cmap](np.clip(np.nan_to_num(h), 0.0, 1.0))[..., :3]
    grey = 0.35 * base + 0.45  # washed out: outside every region
    out = np.where(missing, grey, (1 - alpha) * base + alpha * colour)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def _draw_box(
    ax, box: Sequence[float], color: Any, label: str | None, lw: float = 2.0, label_bg: Any = None
) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=lw))
    if label:
        ax.text(
            x1 + 2,
            y1 + 2,
            label,
            color="white",
            fontsize=8,
            va="top",
            ha="left",
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
    heats: Sequence[np.ndarray] | None = None,
    cmap: str = HEAT_CMAP,
    alpha: float = 0.6,
) -> tuple[Figure, list, Any]:
    """A figure whose photo axes fit the image exactly (no empty bands).

    Args:
        width: width of the whole figure in inches (photo panels + colour bar column).
        title_h: inches reserved at the top for the figure title.
        cbar_w: inches reserved at the right for a colour bar (0: none).
        panels: photo panels side by side.
        panel_title_h: inches above each panel for its own title.
        heats: one ``(h, w)`` map in [0, 1] per panel, blended over the photo with ``cmap`` at
            opacity ``alpha`` (composited in numpy at display size: one ``imshow`` per panel).

    Returns:
        ``(fig, photo_axes, colour_bar_axes or None)``.
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
    if heats is None:
        photo = image.convert("RGB")
        photo.thumbnail((side, side))
        layers = [np.asarray(photo)] * panels
    else:
        layers = [overlay(image, heat, cmap=cmap, alpha=alpha, max_side=side) for heat in heats]
    axes = []
    for p in range(panels):
        pixels = layers[p]
        left = p * (panel_w + gap)
        ax = fig.add_axes((left / fig_w, 0.05 / fig_h, panel_w / fig_w, panel_h / fig_h))
        ax.imshow(pixels, interpolation="bilinear", extent=(0, w, h, 0))
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_axis_off()
        axes.append(ax)
    cax = None
    if cbar_w > 0:
        cx = panels * panel_w + gap * (panels - 1) + 0.2
        cax = fig.add_axes(
            (cx / fig_w, 0.12 * panel_h / fig_h, 0.15 / fig_w, 0.8 * panel_h / fig_h)
        )
    return fig, axes, cax


def _colorbar(fig: Figure, cax, cmap: str, label: str) -> None:
    cb = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=cmap), cax=cax)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)


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
    cbar_label: str = "attention (relative to the peak)",
    cmap: str = HEAT_CMAP,
    alpha: float = 0.6,
    width: float = 6.0,
) -> np.ndarray:
    """A heatmap over the photo with a colour bar; the ``top`` regions outlined and labelled.

    Args:
        heat: ``(h, w)`` map in [0, 1] covering the photo (see :func:`shan.explain.box_heatmap`).
        top: ``[(region index, weight), ...]`` to outline.
        labels: region names, indexed by region.
    """
    fig, (ax,), cax = _photo_figure(
        image, width, title_h=0.4, cbar_w=0.9, heats=[heat], cmap=cmap, alpha=alpha
    )
    w, h = image.size
    if boxes is not None:
        for rank, (i, wt) in reversed(list(enumerate(top))):  # the best one drawn last, on top
            name = labels[i] if i < len(labels) else ""
            _draw_box(
                ax, boxes[i], "white", f"{rank + 1}. #{i} {name} ({wt:.2f})", 2.0, label_bg="black"
            )
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    _colorbar(fig, cax, cmap, cbar_label)
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
                    (highlight_word - 0.5, -0.5), 1, len(rows), fill=False, edgecolor="red", lw=2
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


def scores_chart(
    captions: Sequence[str],
    scores: np.ndarray,
    title: str = "Scores per caption (best first)",
) -> np.ndarray:
    """Grouped horizontal bars: final score S and the three step scores for every caption.

    With several captions a second panel shows each score minus the best caption's, zoomed in:
    close captions (a true one and its hard negative) differ by little, and this panel shows
    which step tells them apart.

    Args:
        captions: ``M`` captions, already in the order to show (best first).
        scores: ``(M, 4)`` columns ``total, l2l, g2l, g2g``.
    """
    sc = np.asarray(scores, dtype=np.float64).reshape(-1, 4)
    m = len(captions)
    keys = ("total", "l2l", "g2l", "g2g")
    fig_h = 1.5 + 0.7 * m
    two = m > 1
    fig_w = 10.5 if two else 7.5
    fig = _figure(fig_w, fig_h)
    left = 2.9 / fig_w
    panel = (fig_w - 2.9 - (0.9 if two else 0.3)) / (2 if two else 1) / fig_w  # fraction
    bar_h = 0.2
    y = np.arange(m)
    panels = [(sc, "score (steps: cosines in [-1, 1]; S: their weighted sum)")]
    if two:
        panels.append((sc - sc[0], "minus the best caption's score"))
    for p, (vals, xlabel) in enumerate(panels):
        x0 = left + p * (panel + 0.6 / fig_w)
        ax = fig.add_axes((x0, 0.75 / fig_h, panel, 1 - 1.4 / fig_h))
        for c, key in enumerate(keys):
            ax.barh(
                y + (c - 1.5) * bar_h,
                vals[:, c],
                height=bar_h,
                color=STEP_COLORS[key],
                label=STEP_LABELS[key],
            )
        ax.set_yticks(y)
        if p == 0:
            ax.set_yticklabels(
                [f"{i + 1}. {shorten(t, 40)}" for i, t in enumerate(captions)], fontsize=8
            )
        else:
            ax.set_yticklabels([])
            lim = max(float(np.abs(vals).max()), 1e-4) * 1.1
            ax.set_xlim(-lim, lim)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4, symmetric=True))
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.legend(
        *fig.axes[0].get_legend_handles_labels(),
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.3 / fig_h),
        ncol=4,
        frameon=False,
    )
    fig.suptitle(title, fontsize=10, va="top", y=1 - 0.05 / fig_h)
    return to_array(fig)


def word_weights_chart(
    words: Sequence[str],
    gamma: np.ndarray,
    txt_pool: np.ndarray,
    title: str = "Step 2 on the words",
) -> np.ndarray:
    """Two bars per word: γ (image context → word attention) and the text pooling weight."""
    n = len(words)
    width = min(14.0, 2.5 + 0.5 * n if n <= 14 else 2.5 + 0.25 * n)
    fig = _figure(width, 3.2)
    ax = fig.add_axes((0.8 / width, 0.3, 1 - 1.0 / width, 0.55))
    x = np.arange(n)
    ax.bar(x - 0.2, gamma, width=0.4, color="#ff7f0e", label="γ: image context → word")
    ax.bar(x + 0.2, txt_pool, width=0.4, color="#9467bd", label="text pooling weight (forms t_c)")
    ax.set_xticks(x)
    ax.set_xticklabels(
        [shorten(w, 14) for w in words], rotation=60, ha="right", fontsize=8 if n <= 30 else 7
    )
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("weight (each kind sums to 1)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return to_array(fig)


def context_regions_image(
    image: Image.Image,
    delta_heat: np.ndarray,
    pool_heat: np.ndarray,
    cmap: str = HEAT_CMAP,
    alpha: float = 0.6,
    width: float = 9.5,
) -> np.ndarray:
    """Step 2 on the image: δ (text context → regions) and image pooling weights, side by side."""
    fig, axes, cax = _photo_figure(
        image,
        width,
        title_h=0.1,
        cbar_w=0.9,
        panels=2,
        panel_title_h=0.3,
        heats=[delta_heat, pool_heat],
        cmap=cmap,
        alpha=alpha,
    )
    titles = (
        "δ: text context t_c → regions",
        "pooling weights that form the image context v_c",
    )
    for ax, ttl in zip(axes, titles):
        ax.set_title(ttl, fontsize=9)
    _colorbar(fig, cax, cmap, "weight ÷ its peak")
    return to_array(fig)


def shares_chart(
    contributions: dict[str, float],
    shares: dict[str, float],
    total: float,
    title: str = "Step 3: how the final score is built",
) -> np.ndarray:
    """Each step's contribution ``w_s · S_s`` to the final score, with its share in percent."""
    keys = ("l2l", "g2l", "g2g")
    vals = [contributions.get(k, 0.0) for k in keys]
    fig = _figure(7.0, 2.8)
    ax = fig.add_axes((0.25, 0.2, 0.7, 0.62))
    names = [STEP_LABELS[k] for k in keys] + [STEP_LABELS["total"]]
    values = vals + [total]
    colors = [STEP_COLORS[k] for k in keys] + [STEP_COLORS["total"]]
    y = np.arange(4)
    ax.barh(y, values, color=colors)
    for yi, (k, v) in enumerate(zip([*keys, "total"], values)):
        txt = f"{v:+.3f}" + (f"  ({100 * shares.get(k, 0):.0f}%)" if k != "total" else "")
        ax.text(v, yi, " " + txt + " ", va="center", ha="left" if v >= 0 else "right", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    lim = max(1e-3, max(abs(v) for v in values)) * 1.45
    ax.set_xlim(-lim if min(values) < 0 else 0, lim)
    ax.set_xlabel("contribution w·S to the final score (share of |w·S| in brackets)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return to_array(fig)


__all__ = [
    "HEAT_CMAP",
    "context_regions_image",
    "heatmap_image",
    "matrix_image",
    "overlay",
    "regions_image",
    "scores_chart",
    "shares_chart",
    "shorten",
    "to_array",
    "word_weights_chart",
]
