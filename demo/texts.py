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
wrong colour) in the **Compare** tab and see which step notices the difference.
"""

MATCH_HOWTO = """\
Upload an image (or click an example), write up to 10 captions — one per line — and press
**Match**. The ranking appears beside the inputs; below it, pick a caption and a word to see
what each step of the model looked at.
"""

COMPARE_HOWTO = """\
**Which step tells a true caption from an almost-true one?** Give one image and two captions —
say the true one (A) and its *hard negative* (B: two colours swapped, another shape, a relation
reversed) — and press **Compare**. The words that differ are highlighted, the chart says how much
each step prefers A or B, and the differing words' heatmaps are shown side by side.
"""

COMPARE_READ = """\
**Left:** each step's part of the gap in the final score, **w·(S_step(A) − S_step(B))** — the
three parts add up to the bottom bar, S(A) − S(B). A bar right of zero means that step prefers
A. A step "caught it" when its bar points the way of the gap and makes at least a fifth of it.
**Right:** A's and B's scores among the true (purple) and non-matching (grey) pairs saved with
the model, when it has such a calibration. **Below:** for each word that differs, step 1's
heatmap of the word in A beside the word that replaced it in B — if the model grounds words
well, each lights up its own object.
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

PAIRS_HOWTO = """\
A *minimal pair* differs from a caption in one controlled way. The app makes them from caption
A alone — two colours or two shapes exchanged, a size changed, the two sides of a relation
exchanged or the relation reversed, a count changed by one, a word moved to another object —
scores them all on the image, and shows for each which score still prefers the true caption
(green, ✓) and which is fooled (red, ✗). A model that only matches words to objects will miss
the pairs that keep the same words: relation swaps and word order.
"""

SCENE_HOWTO = """\
**Make your own test scene.** Switch on up to five objects, choose each one's shape, colour,
size, pattern and place, and a background; **Draw** renders it with the same renderer that made
the model's training pictures, and the toy world's own grammar writes its true captions and a
*hard negative* (two colours swapped — false for this scene). **Mirror** moves every object to
the other side. Then send the scene to **Match** (its captions ranked) or **Compare** (a true
caption against its hard negative).
"""

SCENE_READ = """\
* **Positions.** Draw a red circle left of a blue square, Match "a red circle left of a blue
  square" and "a blue square left of a red circle"; then Mirror and Match again. Did the ranking
  flip? If not, the model does not read positions.
* **Binding.** A red circle and a blue square: does "a blue circle and a red square" (the same
  words!) score lower? Compare shows which step notices.
* **Counting.** Two red circles, then three: does "two red circles" follow?
* **Unknown words.** The vocabulary above lists the words the model knows; a word it does not
  know is read as *unknown* and means nothing to it.
* A scene the world's rules forbid (an object hidden by another, too little contrast with the
  background) is refused with the reason.
"""

SEARCH_HOWTO = """\
**Search** turns the question around: upload several images (up to 16) and write **one**
caption. SHAN scores every image against the caption and ranks them, best first; every label
shows the final score and the three step scores. Click an image (or pick it in the list) to see
the steps of the caption on *that* image — is the runner-up close for the right reason?
"""

ABOUT = """\
### About this demo
* **Model.** An open re-implementation of SHAN (no official code was released). What the loaded
  model knows and does not is read from its model card (above, and in the banner at the top of
  the page); a model only knows the world it was trained on. Real photos need the app started
  with the Bottom-Up-Attention detector and a model trained on Flickr30K/COCO features.
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
    "COMPARE_HOWTO",
    "COMPARE_READ",
    "PAIRS_HOWTO",
    "MATCH_HOWTO",
    "RANKING",
    "REGIONS",
    "SCENE_HOWTO",
    "SCENE_READ",
    "SEARCH_HOWTO",
    "STEP1",
    "STEP2",
    "STEP3",
    "TITLE",
]
