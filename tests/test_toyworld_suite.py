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
    captions = [c["text"] for r in records for c in r["captions"]]  # as the precomp files hold
    arrays = SplitArrays(
        feats, np.ones((n, 2), bool), captions, boxes, ids, np.full(n, 2), Path("."), "t"
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
        return _Batch(torch.tensor(ids).view(-1, 1), torch.ones(len(ids), dtype=torch.long))


class _Batch:
    def __init__(self, tokens, lengths) -> None:
        self.tokens, self.lengths = tokens, lengths

    def to(self, device):
        return self


class _TruthModel:
    """total and l2l: 1 for a true (image, caption) pair, 0 otherwise (the oracle); g2l: always 0
    (every pair ties); g2g: 1 - truth (always wrong)."""

    def __init__(self, text: _Text, records: list[dict], use_g2g: bool = True) -> None:
        self.text, self.records = text, records
        self.cfg = type("C", (), {"max_words": 64, "use_g2g": use_g2g})()
        self.d_of = {j: (i, k) for j, (i, k, _) in enumerate(distractor_ids(records))}

    training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def encode_images(self, feats, mask, boxes=None):
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


def _metrics(map_dark: float, relations: float, ratio: float) -> dict:
    det = {"by_background": {"tone": {"dark": {"map50": map_dark}, "light": {"map50": 0.97}}}}
    groups = {g: {"n": 10, "total": 0.95} for g in TARGET_GROUPS}
    groups["relations"]["total"] = relations
    retrieval = {"total": {"i2t_r1": 90.0, "t2i_r1": 70.0}}
    ev = {"detector": det, "retrieval": retrieval, "suite": {"groups": groups}}
    return {"evaluation": {**ev, "pooling": {"ratio": ratio}}}


def test_targets_and_capabilities_follow_the_measurements():
    from shan.toyworld.report import capabilities, targets

    rows = {r["name"]: r for r in targets(_metrics(0.6, 0.95, 2.5))}
    assert not rows["detector mAP@0.5, tone dark"]["met"]
    assert rows["detector mAP@0.5, tone light"]["met"]
    assert rows["R@1 image→text"]["met"] and not rows["R@1 text→image"]["met"]
    assert rows["compositional: relations (total score)"]["met"]
    assert rows["pooling weight, content / function words"]["met"]
    caps = capabilities(list(rows.values()))
    unknown = {f["measure"] for f in caps["does_not_know"]}
    assert unknown == {"detector mAP@0.5, tone dark", "R@1 text→image"}
    assert len(caps["knows"]) == len(rows) - 2
    worse = {r["name"]: r for r in targets(_metrics(0.95, 0.5, float("nan")))}
    assert not worse["compositional: relations (total score)"]["met"]
    assert not worse["pooling weight, content / function words"]["met"]  # NaN is not a pass


def test_ablation_summary_means_stds_and_the_full_models_lead_in_std():
    from shan.toyworld.report import summarise_ablations, targets

    def run(rsum):
        return {"rsum": rsum, "i2t_r1": 1.0, "t2i_r1": 1.0, "groups": {"counts": 0.5},
                "types": {}, "distractors": {}}  # fmt: skip

    runs = {"both (full)": [run(500), run(502), run(504)],
            "L2L only": [run(490), run(491), run(492)],
            "G2G only": [run(499), run(500), run(501)]}  # fmt: skip
    res = summarise_ablations(runs, {"epochs": 1}, {"G2L only": "not trained"})
    full = res["summary"]["both (full)"]["rsum"]
    assert full["mean"] == pytest.approx(502) and full["std"] == pytest.approx(2.0)
    gaps = res["single_step"]["full_gap_in_std"]
    assert gaps["L2L only"] == pytest.approx(5.5)  # (502 - 491) / max(2, 1)
    assert gaps["G2G only"] == pytest.approx(1.0)
    metrics = _metrics(0.95, 0.95, 2.5)
    metrics["ablations"] = res
    rows = {r["name"]: r for r in targets(metrics)}
    assert rows["full model beats L2L only by > 2 std (rSum)"]["met"]
    assert not rows["full model beats G2G only by > 2 std (rSum)"]["met"]
