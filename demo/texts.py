"""Teaching texts shown beside each view of the demo (Markdown)."""

from __future__ import annotations

TITLE = "SHAN — how a model decides whether a caption fits a picture, step by step"

INTRO = """\
**SHAN** (*Step-Wise Hierarchical Alignment Network*, Ji, Chen & Wang, IJCAI 2021) scores how well a
caption describes an image. It does not compare the whole image with the whole sentence in one go.
It first cuts both into pieces — **regions** of the image (found by an object detector) and
**words** of the caption — and aligns them in three steps, from small to big:

| Step | Paper's name | What is compared | Score |
|---|---|---|---|
| 1 | **local-to-local** (fragment level) | every word ↔ every region | S_L2L |
| 2 | **global-to-local** (context level) | whole caption ↔ regions, whole image ↔ words | S_G2L |
| 3 | **global-to-global** (context level) | the whole image ↔ the whole caption | S_G2G |

The final score is **S = S_L2L + S_G2L + S_G2G**. Higher means "this caption fits this image
better". Try a true caption and a *hard negative* (a caption that is almost right, e.g. with the
wrong colour) and see which step notices the difference.
"""

MATCH_HOWTO = """\
**How to use:** upload an image (or click an example below), write up to 10 captions — one per
line — and press **Match**. Then pick a caption and a word to see what the model looked at.
"""

RANKING = """\
### The ranking
Each caption gets the final score **S** and its three step scores; captions are sorted best
first. A raw step score has **no fixed meaning** on its own: in a trained model a true caption
can score S_L2L ≈ 0.05, and a step may give almost every caption the same high score. So the
chart shows two things instead:

* **left — margins:** each caption's scores *minus the best caption's*, per step (small gaps are
  enlarged). A true caption and its hard negative differ by little in S; the bars show which
  step makes the difference.
* **right — evidence:** each score placed among the scores of true (purple) and non-matching
  (grey) image–caption pairs of the model's test split, saved with the model. A tick inside the
  purple box is *typical of a true pair*; inside the grey one, *typical of a non-matching pair*.
  A step whose two boxes overlap cannot tell them apart. Without such a calibration the chart
  says so and shows the raw scores only.

Words the model has never seen are marked with **?** — it treats them all as the same
"unknown" word.
"""

REGIONS = """\
### What the model sees: regions
The detector turns the picture into boxes, each with a class, an attribute (here: a colour) and a
confidence. SHAN never sees pixels — only one feature vector per box. Every later picture
refers to these boxes by their number **#i**.
"""

STEP1 = """\
### Step 1 · local-to-local alignment (fragment level)
**What it computes.** For every word *j* and every region *i*, SHAN measures how similar they are
(an *affinity*, a cosine). Each word then spreads its attention over the regions:
**β[i, j]** = how much word *j* looks at region *i* (a softmax over the regions, so a word's
attention adds up to 1). In the same way each region attends over the words (**α**). A word is
*well aligned* when the regions it looks at really resemble it; averaging this over all words and
regions gives **S_L2L**.

**How to read the pictures.** Left, the photo as it is; right, the heatmap: each region's β
painted over its box (where boxes overlap, the larger β shows), scaled so its peak is 1, over
the photo turned grey — so an object's own colour cannot pass for heat. **Bright gold = the
word looks here, black = it ignores this part** (the colour bar gives the values); hatched grey
parts lie outside every region — the model cannot see them at all. The outlined boxes are the
word's top 3 regions, with their β. The small pictures show every word at once, each with its
own colour bar. The matrices below have one column per word and one
row per region. Left, **β**: each column is one word's attention over the regions (sums to 1) —
a sharp column (one bright cell) means the word found a clear match, a flat one that it is
unsure. Right, **α**: each row is one region's attention over the words (sums to 1) — which
word describes this region best.
"""

STEP2 = """\
### Step 2 · global-to-local alignment (context level)
**What it computes.** Each region is first blended with the words it attended to in step 1 (a
learned *gate* decides how much), and likewise each word with its regions. Then the regions are
pooled into one **image context** vector and the words into one **text context** vector — a
weighted average, with learned *pooling weights*. Now each context looks at the *other* side's
pieces:
* the **text context → regions** attention **δ**: which regions fit the caption as a whole;
* the **image context → words** attention **γ**: which words fit the image as a whole.

**S_G2L** is the average of the two resulting cosines.

**How to read the pictures.** After the photo: δ over the image (gold = the regions the whole
caption points to), then the pooling weights, i.e. which regions make up the image context.
Bar chart: for each word, γ (orange: how much the image context attends to it) and its pooling
weight in the text context (purple; a dashed line when all words weigh the same). The line
above the bars names the word with the most weight. Tall bars show where *this model* puts its
weight — often a small word such as "and" or "of" that links the objects — which is not
necessarily what the sentence is about. Titles say so when pooling weights are all equal: then
the context is a plain average and singles nothing out.
"""

STEP3 = """\
### Step 3 · global-to-global alignment (context level)
**What it computes.** The image context is added to what it attended to in the caption (and the
text context to what it attended to in the image). The two resulting vectors — one for the whole
image, one for the whole caption — are compared with a single cosine: **S_G2G**.

**How to read the picture.** Left: what each step adds to the final score
**S = w₁·S_L2L + w₂·S_G2L + w₃·S_G2G** (all weights 1 unless the checkpoint says otherwise), with
each step's share of the total in brackets. A step with a *negative* bar pulls the score down:
it found something that does not fit. Right: the gap to the other caption (the runner-up, or
the best one), step by step. **A share of the score is not a share of the decision:** a step
that adds little to S can still be the one that separates a true caption from its hard
negative — the right-hand bars, and the text below, say which step does.
"""

SEARCH_HOWTO = """\
**Search** turns the question around: upload several images (up to 16) and write **one**
caption. SHAN scores every image against the caption and ranks them, best first. Below the
ranking, the step-1 heatmaps show, for the best image, where each word of the caption looked.
"""

SEARCH_HEATMAPS = """\
### Step 1 on the best image
One small picture per word, the photo beside its heatmap: gold boxes are the regions that word
attended to (β, scaled to the word's peak; black = ignored, hatched = no region). If the
caption is right for the image, each content word should light up a matching object.
"""

ABOUT = """\
### About this demo
* **Model.** An open re-implementation of SHAN (no official code was released). The shipped
  model is trained on a synthetic *toy world* of simple coloured shapes, so it understands only
  that world: colours, shapes and their positions. Real photos work when the app is started with
  the Bottom-Up-Attention detector and a model trained on Flickr30K/COCO features.
* **Regions.** SHAN reads one feature vector per detected box; the boxes, classes and
  attributes shown are the detector's.
* **Heatmaps.** Attention weights are per region; a heatmap paints each region's weight over its
  box. They show *where the model looked*, which is not always *why* it decided.
* **Scores** are cosine similarities in [−1, 1] per step; the final score is their weighted sum.
  A raw value has no fixed meaning; when the model was saved with a calibration (its scores on
  the true and non-matching pairs of its test split), each score is also placed among those.
* **Colours.** Every attention picture uses one colour map (inferno: black → purple → red →
  gold, brighter = more attention) over the photo in grey.
"""

__all__ = [
    "ABOUT",
    "INTRO",
    "MATCH_HOWTO",
    "RANKING",
    "REGIONS",
    "SEARCH_HEATMAPS",
    "SEARCH_HOWTO",
    "STEP1",
    "STEP2",
    "STEP3",
    "TITLE",
]
