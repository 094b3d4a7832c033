"""Examples for the app: test images with minimal pairs (a caption and its relation swap, a
scene and its mirror), checked against the model that ships with them."""

from __future__ import annotations

from typing import Any

import torch

from shan.toyworld.metrics import ToySplit, encode_images
from shan.toyworld.negatives import RELATION_SWAP


def choose_examples(
    loaded: Any, test: ToySplit, distractors: ToySplit, n: int, device: Any = "cpu"
) -> tuple[list[dict], dict]:
    """Test images with a relation-swap negative and a mirror distractor that falsifies a caption.

    Each example: the image, its 5 captions, its typed negatives (one per type where there is one,
    the relation swap among them), and the mirrored scene. An example is preferred when the model
    gets all three right: one of its own captions ranks first among all candidates' captions and
    negatives, the true caption beats the relation swap, the image beats its mirror on the
    falsified caption; failures are shipped only if fewer than 3 pass (marked, never hidden).
    """
    d_row = {d: j for j, d in enumerate(distractors.arrays.ids or [])}
    cands = []
    for i, rec in enumerate(test.records):
        negs = rec.get("negatives") or []
        rel = [(c, x) for c, per in enumerate(negs) for x in per if x["type"] == RELATION_SWAP]
        mir = [
            (k, d)
            for k, d in enumerate(rec.get("distractors") or [])
            if d["type"] == "mirror" and d.get("false_captions") and d.get("file")
        ]
        if rel and mir and f"{rec['id']}#{mir[0][0]}" in d_row:
            cands.append((i, rel[0], mir[0]))
        if len(cands) >= 3 * n:
            break
    if not cands:
        return [], {"candidates": 0, "kept": 0, "all_right": 0}
    model = loaded.model
    pool = [
        (ci, c["text"]) for ci, (i, _, _) in enumerate(cands) for c in test.records[i]["captions"]
    ]
    pool += [(-1, neg["text"]) for _, (_, neg), _ in cands]
    with torch.no_grad():
        batch = loaded.text.encode_batch([t for _, t in pool], model.cfg.max_words)
        txt = model.encode_captions(batch.tokens.to(device), batch.lengths.to(device))
        rows = [i for i, _, _ in cands]
        s_true = model.score(encode_images(model, test, rows, device), txt).total.float().cpu()
        mrows = [d_row[f"{test.records[i]['id']}#{k}"] for i, _, (k, _) in cands]
        s_mir = model.score(encode_images(model, distractors, mrows, device), txt).total.cpu()
    kept, failed = [], []
    n_true = len(pool) - len(cands)
    for ci, (i, (c, neg), (_, mir)) in enumerate(cands):
        rec = test.records[i]
        own = [j for j, (o, _) in enumerate(pool) if o == ci]
        cap_col = own[c]
        fc = own[int(mir["false_captions"][0])]
        checks = {
            "top_caption_is_own": pool[int(s_true[ci].argmax())][0] == ci,
            "true_beats_relation_swap": bool(s_true[ci, cap_col] > s_true[ci, n_true + ci]),
            "image_beats_mirror": bool(s_true[ci, fc] > s_mir[ci, fc]),
        }
        per_type = {}
        for per in rec.get("negatives") or []:
            for x in per:
                per_type.setdefault(x["type"], x["text"])
        ex = {
            "image": "",
            "source": rec["id"],
            "captions": [x["text"] for x in rec["captions"]],
            "hard_negative": neg["text"],
            "hard_negative_source": c,
            "hard_negative_type": RELATION_SWAP,
            "negatives": [{"type": t, "text": x} for t, x in per_type.items()],
            "distractor": {
                "type": "mirror",
                "image": "",
                "false_captions": [int(x) for x in mir["false_captions"]],
            },
            **checks,
            "objects": [
                {k2: o[k2] for k2 in ("shape", "colour", "size", "pattern", "box")}
                for o in rec["objects"]
            ],
            "background": {k2: rec["background"][k2] for k2 in ("tone", "hue", "texture")},
            "_file": rec["file"],
            "_mirror_file": mir["file"],
        }
        (kept if all(checks.values()) else failed).append(ex)
    n_ok = len(kept)
    kept = (kept + failed)[: max(n, 0)] if n_ok < 3 else kept[:n]
    for j, ex in enumerate(kept):
        ex["image"] = f"toy_{j + 1:02d}.png"
        ex["distractor"]["image"] = f"toy_{j + 1:02d}_mirror.png"
    return kept, {"candidates": len(cands), "kept": len(kept), "all_right": n_ok}


__all__ = ["choose_examples"]
