"""shan.calibration: step scores among matching and non-matching pairs, saved with a model."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from shan.calibration import (
    CALIBRATION_NAME,
    N_QUANTILES,
    Calibration,
    CalibrationError,
    calibrate_arrays,
    calibrate_scores,
    calibrate_split,
    load_calibration,
    save_calibration,
)
from shan.errors import ShanError


def _match(n: int) -> np.ndarray:
    return (np.arange(5 * n)[None, :] // 5) == np.arange(n)[:, None]


def _gauss(n: int, mu_match: float, mu_non: float, sd: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = rng.normal(mu_non, sd, (n, 5 * n))
    s[_match(n)] += mu_match - mu_non
    return s


@pytest.fixture(scope="module")
def cal() -> Calibration:
    n = 300
    l2l = _gauss(n, 0.1, -0.2, 0.1, seed=1)  # separates well (like the toy model's S_L2L)
    g2l = _gauss(n, 0.75, 0.75, 0.05, seed=2)  # does not separate (like its S_G2L)
    return calibrate_scores(
        {"total": l2l + g2l, "l2l": l2l, "g2l": g2l, "g2g": np.zeros_like(l2l)},
        source={"split": "test"},
    )


def test_quantiles_counts_and_auc_follow_the_data(cal):
    n = 300
    l2l = _gauss(n, 0.1, -0.2, 0.1, seed=1)
    s = cal.steps["l2l"]
    assert (s.n_match, s.n_nonmatch, s.n_dropped) == (5 * n, 5 * n * n - 5 * n, 0)
    assert len(s.match_quantiles) == len(s.nonmatch_quantiles) == N_QUANTILES
    grid = np.linspace(0, 1, N_QUANTILES)
    np.testing.assert_allclose(s.match_quantiles, np.quantile(l2l[_match(n)], grid))
    np.testing.assert_allclose(s.nonmatch_quantiles, np.quantile(l2l[~_match(n)], grid))
    # AUC of two normals 0.3 apart with sd 0.1: Φ(0.3 / (0.1 √2)) = 0.983
    assert s.auc == pytest.approx(0.5 * (1 + math.erf(0.3 / 0.2)), abs=0.01)
    assert cal.steps["g2l"].auc == pytest.approx(0.5, abs=0.03)
    assert cal.source["split"] == "test" and cal.source["n_images"] == n


def test_logistic_fit_recovers_the_true_log_odds(cal):
    # equal-variance normals: log-odds = (Δμ / σ²) s + const, slope 0.3 / 0.01 = 30, and
    # P = 0.5 halfway between the means (s = -0.05)
    s = cal.steps["l2l"]
    assert s.slope == pytest.approx(30.0, rel=0.1)
    assert cal.probability("l2l", -0.05) == pytest.approx(0.5, abs=0.05)
    xs = np.linspace(-0.6, 0.6, 41)
    ps = [cal.probability("l2l", x) for x in xs]
    assert all(b >= a for a, b in zip(ps, ps[1:]))  # monotone
    assert ps[0] < 0.01 and ps[-1] > 0.99
    assert abs(cal.probability("g2l", 0.75) - 0.5) < 0.05  # a step that cannot tell says ~0.5


def test_prior_shifts_the_log_odds(cal):
    p = cal.probability("l2l", 0.0)
    q = cal.probability("l2l", 0.0, prior=0.01)
    logit = lambda x: math.log(x / (1 - x))  # noqa: E731
    assert logit(q) - logit(p) == pytest.approx(logit(0.01), abs=1e-9)
    with pytest.raises(CalibrationError, match="prior"):
        cal.probability("l2l", 0.0, prior=1.0)


def test_percentiles_read_back_from_the_quantiles(cal):
    s = cal.steps["l2l"]
    assert cal.percentile("l2l", s.match_quantiles[50], "match") == pytest.approx(50)
    assert cal.percentile("l2l", s.nonmatch_quantiles[90], "nonmatch") == pytest.approx(90)
    assert cal.percentile("l2l", -10.0, "match") == 0.0
    assert cal.percentile("l2l", 10.0, "nonmatch") == 100.0
    mid = (s.match_quantiles[20] + s.match_quantiles[21]) / 2
    assert 20 < cal.percentile("l2l", mid) < 21  # linear between stored quantiles
    with pytest.raises(CalibrationError, match="population"):
        cal.percentile("l2l", 0.0, "other")
    with pytest.raises(CalibrationError, match="no calibration for step"):
        cal.percentile("nope", 0.0)


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"(\d+(?:\.\d+)?)(?:%|st|nd|rd|th)", text)]


def test_verdicts_are_generated_from_the_numbers(cal):
    s = cal.steps["l2l"]
    true_like = cal.evidence("l2l", s.match_quantiles[50])
    assert true_like.kind == "match" and true_like.text.startswith("typical of a true pair")
    above, pct = _numbers(true_like.text)[:2]
    assert above == math.floor(true_like.pct_nonmatch) and pct == round(true_like.pct_match)
    assert f"{true_like.probability:.2f}" in true_like.text or "> 0.99" in true_like.text
    non_like = cal.evidence("l2l", s.nonmatch_quantiles[50])
    assert non_like.kind == "nonmatch"
    assert non_like.text.startswith("typical of a non-matching pair")
    assert _numbers(non_like.text)[0] == math.floor(100 - non_like.pct_match)
    overlap = cal.evidence("g2l", 0.75)
    assert overlap.kind == "between" and "both kinds" in overlap.text
    assert cal.verdict("l2l", s.match_quantiles[50]) == true_like.text


def test_a_score_in_the_gap_between_separated_populations_is_in_between():
    n = 20
    s = _gauss(n, 1.0, -1.0, 0.05)
    cal = calibrate_scores({"l2l": s})
    ev = cal.evidence("l2l", 0.0)
    assert ev.kind == "between"
    assert "lower than all 100 true pairs" in ev.text
    assert "higher than all 1900 non-matching pairs" in ev.text
    assert cal.steps["l2l"].auc == 1.0
    assert 0.0 < cal.probability("l2l", 0.0) < 1.0  # the ridge keeps a separable fit finite
    assert cal.probability("l2l", 0.9) > 0.99 and cal.probability("l2l", -0.9) < 0.01


def test_disabled_steps_give_no_evidence(cal):
    assert not cal.steps["g2g"].enabled and not cal.steps["g2g"].available
    assert cal.percentile("g2g", 0.0) is None and cal.probability("g2g", 0.0) is None
    ev = cal.evidence("g2g", 0.0)
    assert ev.kind == "unknown" and "switched off" in ev.text
    s = _gauss(4, 1, 0, 0.1)
    off = calibrate_scores({"l2l": s}, enabled={"l2l": False})
    assert not off.steps["l2l"].enabled


def test_tiny_splits_and_nan():
    one = calibrate_scores({"l2l": np.array([[0.1, 0.2, 0.3, 0.2, 0.1]])})  # no non-matching pair
    s = one.steps["l2l"]
    assert s.n_match == 5 and s.n_nonmatch == 0 and not s.available and s.auc is None
    ev = one.evidence("l2l", 0.2)
    assert ev.kind == "unknown" and "too few pairs" in ev.text and ev.probability is None
    two = calibrate_scores({"l2l": _gauss(2, 1.0, 0.0, 0.1)})
    assert two.steps["l2l"].available and two.evidence("l2l", 1.0).kind == "match"
    m = _gauss(3, 1.0, 0.0, 0.1)
    m[0, 0] = np.nan
    m[2, 0] = np.inf
    cal = calibrate_scores({"l2l": m})
    st = cal.steps["l2l"]
    assert (st.n_dropped, st.n_match, st.n_nonmatch) == (2, 14, 29)
    assert all(math.isfinite(q) for q in st.match_quantiles + st.nonmatch_quantiles)
    nan = cal.evidence("l2l", float("nan"))
    assert nan.kind == "unknown" and "not a number" in nan.text
    assert cal.percentile("l2l", float("nan")) is None and cal.probability("l2l", None) is None
    all_nan = calibrate_scores({"l2l": np.full((2, 10), np.nan)})
    assert not all_nan.steps["l2l"].available


def test_bad_inputs_raise_calibration_errors():
    assert issubclass(CalibrationError, ShanError)
    with pytest.raises(CalibrationError, match="N × 5N"):
        calibrate_scores({"l2l": np.zeros((3, 7))})
    with pytest.raises(CalibrationError, match="share one"):
        calibrate_scores({"l2l": np.ones((2, 10)), "g2l": np.ones((2, 5))})
    with pytest.raises(CalibrationError, match="no score matrices"):
        calibrate_scores({})
    with pytest.raises(CalibrationError, match="unknown steps"):
        calibrate_scores({"l3l": np.ones((2, 10))})
    # any layout works with an explicit match matrix
    match = np.eye(3, dtype=bool)
    scores = np.where(match, 1.0, 0.0) + np.random.default_rng(0).normal(0, 0.1, (3, 3))
    assert calibrate_scores({"l2l": scores}, match=match).steps["l2l"].n_match == 3


def test_a_step_scores_object_with_tensors_is_accepted():
    from shan.model.shan import StepScores

    t = torch.from_numpy(_gauss(3, 1.0, 0.0, 0.1)).float()
    cal = calibrate_scores(StepScores(t, t, t * 0, t))
    assert set(cal.steps) == {"total", "l2l", "g2l", "g2g"} and not cal.steps["g2l"].enabled


def test_large_non_matching_populations_are_sampled_with_a_fixed_seed():
    s = _gauss(40, 1.0, 0.0, 0.2)
    a = calibrate_scores({"l2l": s}, max_nonmatch=1000)
    b = calibrate_scores({"l2l": s}, max_nonmatch=1000)
    assert a.steps["l2l"].n_nonmatch == 40 * 200 - 200  # true count kept
    assert a.source["nonmatch_sampled"] == 1000
    assert a.steps["l2l"].nonmatch_quantiles == b.steps["l2l"].nonmatch_quantiles
    full = calibrate_scores({"l2l": s})
    assert a.steps["l2l"].nonmatch_quantiles[50] == pytest.approx(
        full.steps["l2l"].nonmatch_quantiles[50], abs=0.03
    )


def test_save_and_load_round_trip(cal, tmp_path):
    assert load_calibration(tmp_path) is None  # a checkpoint without one
    path = save_calibration(cal, tmp_path)
    assert path.name == CALIBRATION_NAME and not list(tmp_path.glob(".calibration.*"))
    data = json.loads(path.read_text())
    assert data["format_version"] == 1 and set(data["steps"]) == {"total", "l2l", "g2l", "g2g"}
    back = load_calibration(tmp_path)
    assert back == cal
    assert back.verdict("l2l", 0.1) == cal.verdict("l2l", 0.1)
    with pytest.raises(CalibrationError, match="not a directory"):
        save_calibration(cal, tmp_path / "missing")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(format_version=99), "newer than this code"),
        (lambda d: d.update(format_version="1"), "format_version"),
        (lambda d: d.update(prior=2.0), "prior"),
        (lambda d: d["steps"].update(l4l={}), "unknown step"),
        (lambda d: d["steps"]["l2l"].update(enabled="yes"), "steps.l2l.enabled"),
        (lambda d: d["steps"]["l2l"].update(n_match=-1), "steps.l2l.n_match"),
        (lambda d: d["steps"]["l2l"].update(match_quantiles=[3, 2, 1]), "ascending"),
        (lambda d: d["steps"]["l2l"].update(match_quantiles=["a"]), "finite numbers"),
        (lambda d: d["steps"]["l2l"].update(auc=1.5), "steps.l2l.auc"),
        (lambda d: d["steps"]["l2l"].update(slope="x"), "steps.l2l.slope"),
        (lambda d: d.update(steps=[]), "steps must be"),
    ],
)
def test_a_bad_file_is_refused_naming_the_field(cal, tmp_path, edit, message):
    data = cal.to_dict()
    edit(data)
    (tmp_path / CALIBRATION_NAME).write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match=message):
        load_calibration(tmp_path)


def test_unreadable_file(tmp_path):
    (tmp_path / CALIBRATION_NAME).write_text("{not json")
    with pytest.raises(CalibrationError, match="cannot read"):
        load_calibration(tmp_path)


# ---------------------------------------------------------------------------------------------
# From a model and a SCAN-format split, through shan.evaluation's scoring


def _tiny_model(**kw):
    from shan.config import ModelConfig
    from shan.data.vocab import Vocabulary
    from shan.model.shan import SHAN

    caps = [f"a {c} {s}" for c in ("red", "blue", "green") for s in ("cube", "ball")]
    vocab = Vocabulary.build(caps)
    torch.manual_seed(0)
    cfg = ModelConfig(img_dim=12, embed_dim=16, vocab_size=len(vocab), word_dim=8, **kw)
    return SHAN(cfg).eval(), vocab, caps


def _split(tmp_path, caps, n=4):
    from shan.data.precomp import write_precomp

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n, 5, 12)).astype(np.float32)
    captions = [caps[(i + j) % len(caps)] for i in range(n) for j in range(5)]
    write_precomp(tmp_path / "tiny_precomp", "test", feats, captions)


def test_calibrate_split_uses_the_evaluation_scoring(tmp_path):
    from shan.data.precomp import load_split_arrays
    from shan.evaluation import compute_sims, compute_step_sims, evaluate_arrays

    model, vocab, caps = _tiny_model(use_g2g=False)
    _split(tmp_path, caps)
    cal = calibrate_split(model, vocab, tmp_path, "tiny", "test")
    assert cal.source == {"split": "test", "n_images": 4, "n_captions": 20, "name": "tiny"}
    assert cal.steps["l2l"].available and not cal.steps["g2g"].enabled
    arrays = load_split_arrays(tmp_path, "tiny", "test")
    batch = vocab.encode_batch(arrays.captions, 64)
    steps = compute_step_sims(model, arrays.feats, arrays.masks, batch)
    total = compute_sims(model, arrays.feats, arrays.masks, batch)
    np.testing.assert_array_equal(steps["total"], total)
    assert np.all(steps["g2g"] == 0)
    np.testing.assert_allclose(
        steps["l2l"] + steps["g2l"], steps["total"], atol=1e-5
    )  # weights 1, 1, (1 · off)
    s = steps["l2l"]
    assert cal.steps["l2l"].match_quantiles[-1] == pytest.approx(float(s[_match(4)].max()))
    # one pass gives the metrics and the same calibration
    both = evaluate_arrays(model, vocab, arrays, calibrate=True)
    plain = evaluate_arrays(model, vocab, arrays)
    assert both["all"] == plain["all"] and "calibration" not in plain
    assert both["calibration"].steps == calibrate_arrays(model, vocab, arrays).steps
