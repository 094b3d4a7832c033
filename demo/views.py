"""View functions: a result of :mod:`demo.pipeline` → what one part of a tab shows.

Pure functions of their inputs (no Gradio, no session, no model): pictures as ``uint8`` arrays
(:mod:`demo.render`), tables as ``pandas.DataFrame``, texts as Markdown (:mod:`demo.explain_text`,
:mod:`demo.texts`), choices as :class:`Choices`. The tab modules (:mod:`demo.tabs`) put them into
components; the tests and ``benchmarks/bench_app.py`` call them directly. Views that fill several
components return a ``dict`` keyed by the names the tab modules list (e.g. :data:`MATCH_VIEWS`).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from demo import explain_text, render
from demo.card import ModelCard
from demo.explain_text import STOPWORDS, is_function_word
from demo.pipeline import CompareResult, MatchResult, PairsResult, SearchResult
from shan.explain import SAME_SCORE as SAME
from shan.explain import STEP_KEYS, StepExplanation, box_heatmap

TABLE_HEADERS = ["Rank", "Caption (as the model reads it)", "S", "S_L2L", "S_G2L", "S_G2G"]
SEARCH_HEADERS = ["Rank", "Image", "S", "S_L2L", "S_G2L", "S_G2G"]
COMPARE_HEADERS = ["Score", "caption A", "caption B", "A − B (w·ΔS)", "prefers", "caught it"]
PAIRS_HEADERS = [
    "Change",
    "Minimal pair (changed words in bold)",
    "ΔS",
    "ΔS_L2L",
    "ΔS_G2L",
    "ΔS_G2G",
    "prefers the true one",
]
KIND_NAMES = {
    "colour_swap": "colour swap",
    "shape_swap": "shape swap",
    "size_swap": "size swap",
    "relation_swap": "relation swap",
    "relation_opposite": "opposite relation",
    "count": "count ±1",
    "word_order": "word order",
}
PREFER_GOOD, PREFER_BAD = "#d9f2d9", "#f8d7d7"  # table cells: prefers the true caption / not
SCORE_NAMES = {"total": "S (final)", "l2l": "S_L2L (step 1)", "g2l": "S_G2L (step 2)"}
SCORE_NAMES["g2g"] = "S_G2G (step 3)"
MAX_PAIR_PICTURES = 3  # Compare: differing words shown side by side at most
#: the names of the Match tab's views, in the order its components are listed
STEP_VIEWS = (
    "word_choices",
    "heatmap",
    "word_summary",
    "thumbnails",
    "matrix",
    "step2_regions",
    "step2_words",
    "step2_text",
    "step3_chart",
    "step3_text",
)
MATCH_VIEWS = ("table", "chart", "regions", "caption_choices", *STEP_VIEWS)


@dataclass(frozen=True)
class Choices:
    """What a Dropdown/Radio offers: ``(label, value)`` pairs and the chosen value."""

    choices: list[tuple[str, int]]
    value: int | None


def _fmt(x: float) -> float:
    return round(float(x), 3)


# --------------------------------------------------------------------------------------------
# Words


def default_word(expl: StepExplanation) -> int:
    """The word to show first: a known content word (no punctuation) with the sharpest attention."""
    best, best_val = 0, -10.0
    for j, w in enumerate(expl.words):
        if all(ch in string.punctuation for ch in w):
            continue
        val = float(expl.beta[:, j].max())
        val -= 2.0 if expl.unknown[j] else 0.0
        val -= 1.0 if w.lower() in STOPWORDS else 0.0
        if val > best_val:
            best, best_val = j, val
    return best


def shown_words(
    expl: StepExplanation, all_words: bool = False, keep: int | None = None
) -> list[int]:
    """Indices of the words a picker lists: the content words in caption order, or every word
    with ``all_words``; ``keep`` (the chosen word) is always listed. A caption of function words
    only lists them all."""
    content = [j for j, w in enumerate(expl.words) if not is_function_word(w)]
    if all_words or not content:
        return list(range(len(expl.words)))
    if keep is not None and 0 <= keep < len(expl.words) and keep not in content:
        content = sorted([*content, keep])
    return content


def word_choices(expl: StepExplanation, j: int | None = None, all_words: bool = False) -> Choices:
    """The word picker: content words first (function words only with ``all_words``); a word
    that occurs twice is labelled with its position."""
    words = expl.display_words
    idx = shown_words(expl, all_words, j)
    counts: dict[str, int] = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    labels = [(f"{words[i]} (word {i + 1})" if counts[words[i]] > 1 else words[i], i) for i in idx]
    return Choices(labels, j)


def word_heatmap(image: Any, expl: StepExplanation, j: int) -> np.ndarray:
    """Step 1: word ``j``'s attention over the regions (β[:, j]) as a heatmap with colour bar."""
    heat = box_heatmap(expl.beta[:, j], expl.boxes, expl.image_size, uncovered=np.nan)
    word = expl.display_words[j]
    return render.heatmap_image(
        image,
        heat,
        title=f"Step 1 · where does the word “{word}” look?  (β, peak {expl.beta[:, j].max():.2f})",
        boxes=expl.boxes,
        top=expl.top_regions(j, 3),
        labels=expl.region_labels,
        cbar_label="β of the box ÷ the peak β",
    )


def thumbnail_label(expl: StepExplanation, j: int) -> str:
    """``“word” → #i region (β 0.82)``: a thumbnail's caption, short enough to read in full."""
    (i, b), *_ = expl.top_regions(j, 1)
    return f"“{expl.display_words[j]}” → #{i} {render.shorten(expl.region_labels[i], 22)} ({b:.2f})"


def word_thumbnails(
    image: Any, expl: StepExplanation, words: Sequence[int] | None = None
) -> list[tuple[np.ndarray, str]]:
    """Step 1: one small heatmap per word (default: every word), labelled by
    :func:`thumbnail_label`."""
    out = []
    for j in range(len(expl.words)) if words is None else words:
        heat = box_heatmap(
            expl.beta[:, j], expl.boxes, expl.image_size, max_side=128, uncovered=np.nan
        )
        out.append((render.heat_thumbnail(image, heat), thumbnail_label(expl, j)))
    return out


def word_matrix(expl: StepExplanation, j: int | None) -> np.ndarray:
    return render.matrix_image(
        expl.beta,
        expl.display_words,
        expl.region_labels,
        title="Step 1 · the word × region attention matrices",
        highlight_word=j,
        second=expl.alpha,
    )


def word_summary(expl: StepExplanation, j: int) -> str:
    """One line: which regions word j attends to most."""
    tops = ", ".join(f"#{i} {expl.region_labels[i]} ({b:.2f})" for i, b in expl.top_regions(j, 3))
    note = " It is an **unknown word**, read as `<unk>`." if expl.unknown[j] else ""
    return f"**“{expl.display_words[j]}”** looks most at: {tops}.{note}"


def word_views(image: Any, expl: StepExplanation, j: int) -> dict[str, Any]:
    """What changes when another word is chosen: heatmap, summary, matrix."""
    return {
        "heatmap": word_heatmap(image, expl, j),
        "word_summary": word_summary(expl, j),
        "matrix": word_matrix(expl, j),
    }


# --------------------------------------------------------------------------------------------
# Steps 2 and 3


def step2_views(image: Any, expl: StepExplanation) -> tuple[np.ndarray, np.ndarray]:
    """Step 2: the photo, δ and image-pooling heatmaps; γ and text-pooling bars per word.

    Titles and the line under the bars are generated from the numbers
    (:mod:`demo.explain_text`): the most weighted word is named, pooling weights that are all
    equal are said to be.
    """
    delta = box_heatmap(expl.delta, expl.boxes, expl.image_size, uncovered=np.nan)
    pool = box_heatmap(expl.img_pool, expl.boxes, expl.image_size, uncovered=np.nan)
    (r, d), *_ = explain_text.top_items(expl.delta, 1)
    titles = (
        f"δ: text context → regions (peak {d:.2f} on #{r})",
        explain_text.pooling_title(
            "image", expl.img_pool, [f"#{i}" for i in range(len(expl.img_pool))]
        ),
    )
    pic = render.context_regions_image(image, delta, pool, titles=titles)
    bars = render.word_weights_chart(
        expl.display_words,
        expl.gamma,
        expl.txt_pool,
        title="Step 2 · the words seen from the whole image",
        note=explain_text.step2_words_note(expl),
        uniform_pool=explain_text.is_uniform(expl.txt_pool),
    )
    return pic, bars


def step3_views(
    expl: StepExplanation,
    captions: Sequence[str] | None = None,
    scores: np.ndarray | None = None,
    m: int | None = None,
    calibration: Any = None,
    noun: str = "caption",
) -> tuple[np.ndarray, str]:
    """Step 3: contributions chart (and, given all items' ``(M, 4)`` scores and this item's
    index ``m``, each step's part of the gap to the other item), and the text.

    ``captions`` name the compared items: the captions of a Match, the images of a Search
    (``noun="image"``).
    """
    c = expl.contributions
    margins, reference = None, ""
    if captions is not None and scores is not None and m is not None:
        ref = explain_text.reference_caption(scores, m)
        if ref is not None:
            weights = explain_text.step_weights_of(expl)
            margins = explain_text.step_margins(scores, m, ref, weights)
            reference = captions[ref]
    chart = render.shares_chart(
        c, expl.shares, expl.scores.get("total", sum(c.values())), margins=margins,
        reference=reference, stacked=True,
    )  # fmt: skip
    md = explain_text.step3_text(expl, captions, scores, m, calibration, noun=noun)
    return chart, md


def _calibration(result: Any, calibration: Any = None) -> Any:
    """The calibration to show: the one given, else the result's (None: none saved)."""
    return calibration if calibration is not None else getattr(result, "calibration", None)


def explanation_views(
    image: Any,
    expl: StepExplanation,
    j: int | None = None,
    all_words: bool = False,
    items: Sequence[str] | None = None,
    scores: np.ndarray | None = None,
    m: int | None = None,
    calibration: Any = None,
    noun: str = "caption",
) -> dict[str, Any]:
    """Every step view of one image–caption pair (:data:`STEP_VIEWS`), word ``j`` chosen
    (default: :func:`default_word`); ``items``/``scores``/``m`` as in :func:`step3_views`."""
    if j is None or not 0 <= j < len(expl.words):
        j = default_word(expl)
    s2_pic, s2_bars = step2_views(image, expl)
    s3_chart, s3_md = step3_views(expl, items, scores, m, calibration, noun)
    return {
        "word_choices": word_choices(expl, j, all_words),
        **word_views(image, expl, j),
        "thumbnails": word_thumbnails(image, expl, shown_words(expl, all_words)),
        "step2_regions": s2_pic,
        "step2_words": s2_bars,
        "step2_text": explain_text.step2_text(expl),
        "step3_chart": s3_chart,
        "step3_text": s3_md,
    }


# --------------------------------------------------------------------------------------------
# Match


def ranking_table(result: MatchResult) -> pd.DataFrame:
    """One row per caption, best first: rank, the caption as the model reads it (its tokens,
    unknown ones marked ``?``), the final and the three step scores."""
    rows = []
    for rank, m in enumerate(result.order, start=1):
        s = result.scores[m]
        words = " ".join(result.display_words(m))
        rows.append([rank, words, *(_fmt(v) for v in s)])
    return pd.DataFrame(rows, columns=TABLE_HEADERS)


def caption_choices(result: MatchResult) -> list[tuple[str, int]]:
    """Dropdown choices ``(label, caption index)`` in rank order."""
    return [
        (f"{r}. {render.shorten(result.captions[m], 70)}  (S = {result.scores[m, 0]:.3f})", m)
        for r, m in enumerate(result.order, start=1)
    ]


def caption_views(
    result: MatchResult,
    m: int,
    j: int | None = None,
    calibration: Any = None,
    all_words: bool = False,
) -> dict[str, Any]:
    """All step views of caption ``m`` (word ``j``, or the default word); needs its explanation."""
    expl = result.explanations[m]
    if expl is None:
        raise ValueError(f"caption {m} is not explained yet (DemoPipeline.explain)")
    return explanation_views(
        result.image,
        expl,
        j,
        all_words,
        result.captions,
        result.scores,
        m,
        _calibration(result, calibration),
    )


def match_views(
    result: MatchResult, calibration: Any = None, all_words: bool = False
) -> dict[str, Any]:
    """Everything the Match tab shows after a new request (the best caption explained), keyed
    by :data:`MATCH_VIEWS`.

    ``calibration`` (default: ``result.calibration``) places every score among the true and
    non-matching pairs saved with the model; without one the charts and texts say that none was
    saved.
    """
    cal = _calibration(result, calibration)
    best = result.order[0]
    ordered = [result.captions[m] for m in result.order]
    return {
        "table": ranking_table(result),
        "chart": render.ranking_chart(ordered, result.scores[result.order], cal),
        "regions": render.regions_image(
            result.image,
            result.regions.boxes.numpy(),
            result.region_labels,
            result.regions.scores.numpy(),
        ),
        "caption_choices": Choices(caption_choices(result), best),
        **caption_views(result, best, calibration=cal, all_words=all_words),
    }


# --------------------------------------------------------------------------------------------
# Compare


def highlighted_words(
    expl: StepExplanation, changed: Sequence[int]
) -> list[tuple[str, str | None]]:
    """``[(token, "changed" | "unknown" | None)]`` for a highlighted-text view; tokens joined
    with spaces (the text as the model reads it)."""
    marks = set(changed)
    out: list[tuple[str, str | None]] = []
    for j, w in enumerate(expl.display_words):
        label = "changed" if j in marks else ("unknown" if expl.unknown[j] else None)
        out.append((w, label))
        if j < len(expl.words) - 1:
            out.append((" ", None))
    return out


def compare_table(cres: CompareResult) -> pd.DataFrame:
    """One row per score: A's, B's, A − B (weighted), which caption it prefers, and whether the
    step is one that caught the difference."""
    cmp = cres.comparison
    rows = []
    for key in ("total", *STEP_KEYS):
        side = {1: "A", -1: "B", 0: "neither"}[cmp.prefers(key)]
        caught = "—" if key == "total" else ("yes" if key in cmp.credited else "")
        rows.append(
            [
                SCORE_NAMES[key],
                _fmt(cmp.a.scores.get(key, 0.0)),
                _fmt(cmp.b.scores.get(key, 0.0)),
                _fmt(cmp.margins[key]),
                side,
                caught,
            ]
        )
    return pd.DataFrame(rows, columns=COMPARE_HEADERS)


def pair_pictures(image: Any, cres: CompareResult) -> list[tuple[np.ndarray, str]]:
    """The differing words' step-1 heatmaps side by side (A's word | B's word), at most
    :data:`MAX_PAIR_PICTURES`; a word with no counterpart shows the plain photo on the other
    side."""
    cmp = cres.comparison
    out = []
    for ia, ib in cmp.pairs[:MAX_PAIR_PICTURES]:
        heats, titles, tops = [], [], []
        for side, expl, j in (("A", cmp.a, ia), ("B", cmp.b, ib)):
            if j is None:
                heats.append(None)
                titles.append(f"{side}: no counterpart (the photo)")
                tops.append(())
                continue
            heats.append(
                box_heatmap(expl.beta[:, j], expl.boxes, expl.image_size, uncovered=np.nan)
            )
            titles.append(f"{side}: “{expl.display_words[j]}” (β peak {expl.beta[:, j].max():.2f})")
            tops.append(expl.top_regions(j, 2))
        pic = render.pair_heatmap(
            image, heats, titles, boxes=cmp.a.boxes, tops=tops, labels=cmp.a.region_labels
        )
        wa = cmp.a.display_words[ia] if ia is not None else "—"
        wb = cmp.b.display_words[ib] if ib is not None else "—"
        out.append((pic, f"“{wa}” in A ↔ “{wb}” in B"))
    return out


def compare_views(cres: CompareResult, calibration: Any = None) -> dict[str, Any]:
    """Everything the Compare tab shows: both captions with their changed words marked, the
    score table, the chart of each step's margin (and both captions' scores among the
    calibration's pairs), the text saying which step caught it, the word heatmaps side by side."""
    cmp = cres.comparison
    cal = _calibration(cres.match, calibration)
    sc = cres.match.scores
    return {
        "words_a": highlighted_words(cmp.a, cmp.changed_a),
        "words_b": highlighted_words(cmp.b, cmp.changed_b),
        "table": compare_table(cres),
        "chart": render.compare_chart(sc, cmp.margins, cal),
        "text": explain_text.compare_text(cmp, cal),
        "pairs": stack_pictures([pic for pic, _ in pair_pictures(cres.match.image, cres)]),
    }


def stack_pictures(pictures: Sequence[np.ndarray], gap: int = 8) -> np.ndarray | None:
    """Pictures one above the other on white (narrower ones centred); None for none."""
    if not pictures:
        return None
    width = max(p.shape[1] for p in pictures)
    rows = []
    for k, p in enumerate(pictures):
        pad = width - p.shape[1]
        row = np.full((p.shape[0], width, 3), 255, dtype=np.uint8)
        row[:, pad // 2 : pad // 2 + p.shape[1]] = p
        rows.append(row)
        if k < len(pictures) - 1:
            rows.append(np.full((gap, width, 3), 255, dtype=np.uint8))
    return np.concatenate(rows, axis=0)


def pairs_table(pres: PairsResult) -> pd.DataFrame:
    """One row per minimal pair: the kind of change, the perturbed caption as the model reads it
    (changed words in bold, unknown ones marked ``?``), the true caption's margin over it in S
    and in each step (``w_s ΔS_s``: positive = that score prefers the true caption), and which
    scores prefer the true one (✓) or the perturbed one (✗)."""
    res = pres.match
    rows = []
    for p, (pert, margin) in enumerate(zip(pres.perturbations, pres.margins)):
        words = res.display_words(p + 1)
        marked = set(pert.changed)
        text = " ".join(f"**{w}**" if j in marked else w for j, w in enumerate(words))
        verdict = " ".join(
            f"{name} {'✓' if d > SAME else '✗' if d < -SAME else '='}"
            for name, d in zip(("S", "1", "2", "3"), margin)
            if name == "S" or pres.weights.get(STEP_KEYS[int(name) - 1], 1.0) != 0.0
        )
        rows.append(
            [KIND_NAMES.get(pert.kind, pert.kind), text, *(_fmt(v) for v in margin), verdict]
        )
    return pd.DataFrame(rows, columns=PAIRS_HEADERS)


def pairs_styled(table: pd.DataFrame) -> Any:
    """:func:`pairs_table` with the margin cells coloured: green where the score prefers the true
    caption, red where it prefers the minimal pair."""

    def colour(v: Any) -> str:
        if not isinstance(v, (int, float)) or abs(v) < SAME:
            return ""
        return f"background-color: {PREFER_GOOD if v > 0 else PREFER_BAD}"

    return table.style.map(colour, subset=PAIRS_HEADERS[2:6]).format(
        precision=3, subset=PAIRS_HEADERS[2:6]
    )


def pairs_views(pres: PairsResult) -> dict[str, Any]:
    """The minimal-pairs table (styled) and the text that sums it up."""
    return {
        "table": pairs_styled(pairs_table(pres)),
        "text": explain_text.pairs_text(
            pres.match.captions[0],
            pres.perturbations,
            pres.margins,
            pres.weights,
            [KIND_NAMES.get(p.kind, p.kind) for p in pres.perturbations],
        ),
    }


# --------------------------------------------------------------------------------------------
# Search


def image_label(rank: int, name: str, s: np.ndarray) -> str:
    """A search gallery label with every score: ``1. a.png · S 1.234 (0.05 / 0.80 / 0.38)``."""
    return (
        f"{rank}. {render.shorten(name, 24)} · S {s[0]:.3f} "
        f"(L2L {s[1]:.2f} · G2L {s[2]:.2f} · G2G {s[3]:.2f})"
    )


def image_choices(result: SearchResult) -> list[tuple[str, int]]:
    return [
        (f"{r}. {render.shorten(result.names[i], 40)}  (S = {result.scores[i, 0]:.3f})", i)
        for r, i in enumerate(result.order, start=1)
    ]


def search_image_views(
    result: SearchResult, i: int, j: int | None = None, all_words: bool = False
) -> dict[str, Any]:
    """Every step view of the caption with image ``i`` (needs its explanation); step 3
    compares this image with the best (or the runner-up)."""
    expl = result.explanations[i]
    if expl is None:
        raise ValueError(f"image {i} is not explained yet (DemoPipeline.explain_image)")
    return explanation_views(
        result.images[i],
        expl,
        j,
        all_words,
        result.names,
        result.scores,
        i,
        result.calibration,
        noun="image",
    )


def search_views(result: SearchResult, all_words: bool = False) -> dict[str, Any]:
    """Ranked gallery (every score on the labels), score table, the image picker and the best
    image's step views."""
    gallery, rows = [], []
    for r, i in enumerate(result.order, start=1):
        s = result.scores[i]
        gallery.append((np.asarray(result.images[i]), image_label(r, result.names[i], s)))
        rows.append([r, result.names[i], *(_fmt(v) for v in s)])
    best = result.order[0]
    return {
        "gallery": gallery,
        "table": pd.DataFrame(rows, columns=SEARCH_HEADERS),
        "image_choices": Choices(image_choices(result), best),
        **search_image_views(result, best, all_words=all_words),
    }


# --------------------------------------------------------------------------------------------
# The model


def banner(card: ModelCard, max_items: int = 4) -> str:
    """The short line above the tabs: what the loaded model knows and does not, from its card."""

    def items(lines: Sequence[str]) -> str:
        more = f" (+{len(lines) - max_items} more under About)" if len(lines) > max_items else ""
        return "; ".join(line.rstrip(".;") for line in lines[:max_items]) + more

    if card.source == "limits":  # an older card: its Limits section, the first points only
        lines = [line.rstrip(".") for line in card.does_not_know]
        return f"⚠️ **Limits of the loaded model** (from its card): {items(lines[:2])}" + (
            f" (+{len(lines) - 2} more under About)" if len(lines) > 2 else ""
        )
    parts = []
    if card.knows:
        parts.append(f"✅ **The loaded model knows:** {items(card.knows)}")
    if card.does_not_know:
        parts.append(f"⚠️ **It does not know:** {items(card.does_not_know)}")
    if not parts:
        return (
            "⚠️ **This model comes without a card saying what it knows:** treat its rankings "
            "as untested."
        )
    return "  \n".join(parts)


def card_facts(card: ModelCard) -> str:
    """Markdown for About: the card's facts as two lists (or what the card lacks)."""
    if not card.has_facts:
        return (
            "The loaded model's card says nothing about what it knows."
            if card.text
            else "The loaded model comes without a model card."
        )
    out = []
    if card.knows:
        out.append("**What it knows** (from its card):\n" + "\n".join(f"- {k}" for k in card.knows))
    if card.does_not_know:
        head = "**Limits**" if card.source == "limits" else "**What it does not know**"
        out.append(f"{head} (from its card):\n" + "\n".join(f"- {k}" for k in card.does_not_know))
    return "\n\n".join(out)


__all__ = [
    "COMPARE_HEADERS",
    "KIND_NAMES",
    "MATCH_VIEWS",
    "PAIRS_HEADERS",
    "SEARCH_HEADERS",
    "STEP_VIEWS",
    "TABLE_HEADERS",
    "Choices",
    "banner",
    "caption_choices",
    "caption_views",
    "card_facts",
    "compare_table",
    "compare_views",
    "default_word",
    "explanation_views",
    "highlighted_words",
    "image_label",
    "match_views",
    "pair_pictures",
    "pairs_styled",
    "pairs_table",
    "pairs_views",
    "ranking_table",
    "search_image_views",
    "search_views",
    "shown_words",
    "stack_pictures",
    "step2_views",
    "step3_views",
    "thumbnail_label",
    "word_choices",
    "word_heatmap",
    "word_matrix",
    "word_summary",
    "word_thumbnails",
    "word_views",
]
