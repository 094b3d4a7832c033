"""The compositional suite (shan.toyworld.suite) against models whose answers are known: an oracle
that scores by the truth, a step that always ties and a step that is always wrong; rows, groups,
distractor pairs and the tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shan import toyworld as tw
from shan.data.precomp import SplitArrays
from shan.model.shan import StepScores
from shan.toyworld.metrics import ToySplit
from shan.toyworld.suite import (
    STEPS,
    TARGET_GROUPS,
    distractor_ids,
    group_rows,
    rows_table,
    run_suite,
    suite_tables,
)

DISTRACTOR_OFFSET = 1000


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    tw.generate_split(out, "test", 10, seed=3, workers=1, image_size=96)
    return tw.load_annotations(out)["images"]


def _split(ids: list[str], first: list[float], records: list[dict]) -> ToySplit:
    """Features whose first number is the row's identity (what the fake model reads)."""
    n = len(ids)
    feats = np.zeros((n, 2, 4), dtype=np.float32)
    feats[:, 0, 0] = first
    boxes = np.zeros((n, 2, 4), dtype=np.float32)
    arrays = SplitArrays(
        feats, np.ones((n, 2), bool), [], boxes, ids, np.full(n, 2), Path("."), "t"
    )
    return ToySplit(arrays, records, boxes, None)


class _Text:
    """Token ids index a registry of texts (one token per caption)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def encode_batch(self, texts, max_words):
        ids = []
        for t in texts:
            if t not in self.texts:
                self.texts.append(t)
            ids.append(self.texts.index(t))
        return type("B", (), {"tokens": torch.tensor(ids).view(-1, 1),
                              "lengths": torch.ones(len(ids), dtype=torch.long)})()  # fmt: skip


class _TruthModel:
    """total and l2l: 1 for a true (image, caption) pair, 0 otherwise (the oracle); g2l: always 0
    (every pair ties); g2g: 1 - truth (always wrong)."""

    def __init__(self, text: _Text, records: list[dict], use_g2g: bool = True) -> None:
        self.text, self.records = text, records
        self.cfg = type("C", (), {"max_words": 64, "use_g2g": use_g2g})()
        self.d_of = {j: (i, k) for j, (i, k, _) in enumerate(distractor_ids(records))}

    def eval(self):
        return self

    def encode_images(self, feats, mask):
        return feats[:, 0, 0].long()

    def encode_captions(self, tokens, lengths):
        return tokens[:, 0]

    def _true(self, img: int, cap: int) -> bool:
        text = self.text.texts[cap]
        if img < DISTRACTOR_OFFSET:
            return text in [c["text"] for c in self.records[img]["captions"]]
        i, k = self.d_of[img - DISTRACTOR_OFFSET]
        caps = [c["text"] for c in self.records[i]["captions"]]
        false = set(self.records[i]["distractors"][k]["false_captions"])
        return text in caps and caps.index(text) not in false

    def score(self, img, txt):
        t = torch.tensor([[float(self._true(int(i), int(c))) for c in txt] for i in img])
        return StepScores(t, t, torch.zeros_like(t), 1 - t)


def test_oracle_wins_every_pair_ties_and_wrong_steps_win_none(records):
    text = _Text()
    model = _TruthModel(text, records)
    split = _split([r["id"] for r in records], list(range(len(records))), records)
    dis_ids = distractor_ids(records)
    assert dis_ids, "the test split draws distractor images"
    distractors = _split([x for _, _, x in dis_ids],
                         [DISTRACTOR_OFFSET + j for j in range(len(dis_ids))], [])  # fmt: skip
    result = run_suite(model, text, split, distractors, group=4)
    negs = result["negatives"]
    assert set(negs) == set(tw.NEGATIVE_TYPES)
    expected_pairs = {t: 0 for t in tw.NEGATIVE_TYPES}
    for r in records:
        for per in r["negatives"]:
            for x in per:
                expected_pairs[x["type"]] += 1
    assert {t: row["n"] for t, row in negs.items()} == expected_pairs
    assert sum(expected_pairs.values()) > 50
    for t, row in negs.items():
        if row["n"]:
            assert (row["total"], row["l2l"], row["g2l"], row["g2g"]) == (1.0, 1.0, 0.0, 0.0), t
        else:
            assert all(np.isnan(row[s]) for s in STEPS)
    dis = result["distractors"]
    assert set(dis) == set(tw.DISTRACTOR_TYPES)
    n_false = sum(len(d["false_captions"]) for r in records for d in r["distractors"])
    assert sum(row["n"] for row in dis.values()) == n_false > 0
    for kind, row in dis.items():
        if row["n"]:
            assert (row["total"], row["g2l"], row["g2g"]) == (1.0, 0.0, 0.0), kind
    groups = result["groups"]
    assert set(groups) == set(TARGET_GROUPS)
    assert groups["relations"]["n"] == negs["relation_swap"]["n"] + negs["relation_opposite"]["n"]
    assert all(result["targets"].values()) and result["targets"]
    text_out = "\n".join(suite_tables(result))
    assert "| colour_swap |" in text_out and "| mirror |" in text_out and "| bindings |" in text_out


def test_group_rows_weight_by_pairs_and_tables_show_percent():
    rows = {"relation_swap": {"n": 30, **dict.fromkeys(STEPS, 1.0)},
            "relation_opposite": {"n": 10, **dict.fromkeys(STEPS, 0.0)},
            "count": {"n": 0, **dict.fromkeys(STEPS, float("nan"))}}  # fmt: skip
    g = group_rows(rows)
    assert g["relations"]["n"] == 40 and g["relations"]["total"] == pytest.approx(0.75)
    assert g["counts"]["n"] == 0 and np.isnan(g["counts"]["total"])
    table = rows_table(g, "category")
    assert "| relations | 40 | 75.0 | 75.0 | 75.0 | 75.0 |" in table
    assert "| counts | 0 | – | – | – | – |" in table


def test_a_step_the_model_does_not_use_is_nan_not_a_failure(records):
    text = _Text()
    split = _split([r["id"] for r in records], list(range(len(records))), records)
    rows = run_suite(_TruthModel(text, records, use_g2g=False), text, split)["negatives"]
    for row in rows.values():
        if row["n"]:
            assert row["total"] == 1.0 and row["g2l"] == 0.0 and np.isnan(row["g2g"])
