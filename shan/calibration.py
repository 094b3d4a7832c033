"""Scores as evidence: where a step's score lies among matching and non-matching pairs.

A raw step score has no fixed meaning. In the toy-world model, true captions get S_L2L ≈ 0.05 (some
below 0), and S_G2L sits between 0.7 and 0.86 for every caption, even one of unknown words. What
a score *says* depends on how that step scores pairs that match and pairs that do not, so this
module measures both on a held-out split scored all-pairs (caption ``c`` belongs to image
``c // 5``, the SCAN layout) and keeps, for the final score and every step:

* the **quantiles** (0 %, 1 %, …, 100 %) of the matching and of the non-matching scores, and
  their counts: :meth:`Calibration.percentile` places a new score within either population;
* the **AUC**: the probability that a random matching pair outscores a random non-matching one
  (ties count half) — how well the step on its own tells the two apart (0.5: not at all);
* a **monotone calibration** ``P(match | s) = σ(a·s + b)``, a 1-D logistic fit with the two
  populations weighted **equally** (a prior of 0.5: "as likely a true pair as not"). The split's
  own base rate (1 pair in N matches) says nothing about a caption someone types, so the fit
  ignores it; :meth:`Calibration.probability` takes another ``prior`` by shifting the log-odds.
  A small ridge penalty keeps the slope finite when a step separates the split perfectly.

:func:`evaluate_arrays(..., calibrate=True) <shan.evaluation.evaluate_arrays>` computes it in
the same scoring pass as the retrieval metrics, :func:`calibrate_split` from a model and a
SCAN-format split, :func:`calibrate_scores` from score matrices already computed.
:func:`save_calibration` writes ``calibration.json`` into a checkpoint directory and
:func:`load_calibration` reads it back (``None`` when the checkpoint has none).

No Gradio or matplotlib here: the demo draws and words these numbers.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shan.errors import ShanError
from shan.files import read_json

CALIBRATION_NAME = "calibration.json"
FORMAT_VERSION = 1
STEPS = ("total", "l2l", "g2l", "g2g")
STEP_LABELS = {"total": "S", "l2l": "S_L2L", "g2l": "S_G2L", "g2g": "S_G2G"}
N_QUANTILES = 101  # 0 %, 1 %, ..., 100 %
MIN_PAIRS = 2  # per population, for percentiles and a fit
TYPICAL = 5.0  # percent: a score in a population's outer 5 % is not "typical" of it
RIDGE = 1e-4  # penalty on the standardised slope of the logistic fit
FIT_POINTS = 2000  # a population larger than this is fitted through this many of its quantiles
MAX_NONMATCH = 5_000_000  # non-matching scores kept per step (a seeded sample beyond this)
CAPS_PER_IMAGE = 5

KINDS = ("match", "nonmatch", "between", "unknown")
KIND_LABELS = {
    "match": "typical of a true pair",
    "nonmatch": "typical of a non-matching pair",
    "between": "in between",
    "unknown": "no evidence",
}


class CalibrationError(ShanError, ValueError):
    """Scores that cannot be calibrated, or a calibration file that cannot be read."""


@dataclass
class StepCalibration:
    """One step's scores on the calibration split.

    Attributes:
        enabled: False for a step the model does not use (its scores are all 0).
        n_match: matching pairs with a finite score.
        n_nonmatch: non-matching pairs with a finite score.
        n_dropped: pairs left out because their score was NaN or infinite.
        match_quantiles: :data:`N_QUANTILES` quantiles (0 % … 100 %) of the matching scores, or
            empty when there are fewer than :data:`MIN_PAIRS`.
        nonmatch_quantiles: the same for the non-matching scores.
        auc: P(matching score > non-matching score), ties half; None without both populations.
        slope: ``a`` in ``P(match | s) = σ(a·s + b)`` (equal priors); None when not fitted.
        intercept: ``b``; None when not fitted.
    """

    enabled: bool
    n_match: int
    n_nonmatch: int
    n_dropped: int = 0
    match_quantiles: list[float] = field(default_factory=list)
    nonmatch_quantiles: list[float] = field(default_factory=list)
    auc: float | None = None
    slope: float | None = None
    intercept: float | None = None

    @property
    def available(self) -> bool:
        """Both populations are known and the step is used: percentiles can be given."""
        return bool(self.enabled and self.match_quantiles and self.nonmatch_quantiles)

    @property
    def fitted(self) -> bool:
        return self.available and self.slope is not None and self.intercept is not None

    def quantile(self, q: float, population: str = "match") -> float | None:
        """The score at fraction ``q`` (0–1) of a population (linear between stored quantiles)."""
        qs = self._quantiles(population)
        if not qs:
            return None
        grid = np.linspace(0.0, 1.0, len(qs))
        return float(np.interp(min(max(float(q), 0.0), 1.0), grid, qs))

    def _quantiles(self, population: str) -> list[float]:
        if population == "match":
            return self.match_quantiles
        if population == "nonmatch":
            return self.nonmatch_quantiles
        raise CalibrationError(f"population must be 'match' or 'nonmatch', got {population!r}")


@dataclass
class Evidence:
    """What one score says, from the calibration of its step.

    Attributes:
        step: ``total``, ``l2l``, ``g2l`` or ``g2g``.
        score: the score.
        kind: one of :data:`KINDS`.
        pct_match: percent of matching pairs scoring lower (ties half), or None.
        pct_nonmatch: percent of non-matching pairs scoring lower (ties half), or None.
        probability: calibrated ``P(match)`` at equal priors, or None.
        text: one line saying it, generated from these numbers.
    """

    step: str
    score: float
    kind: str
    pct_match: float | None
    pct_nonmatch: float | None
    probability: float | None
    text: str

    @property
    def label(self) -> str:
        return KIND_LABELS[self.kind]


@dataclass
class Calibration:
    """Every step's calibration, saved with a checkpoint as ``calibration.json``.

    Attributes:
        steps: ``total`` / ``l2l`` / ``g2l`` / ``g2g`` → :class:`StepCalibration`.
        source: where it comes from (``split``, ``n_images``, ``n_captions``, …).
        prior: the prior the logistic fit assumes (0.5: the populations weighted equally).
        format_version: :data:`FORMAT_VERSION` of the file.
    """

    steps: dict[str, StepCalibration]
    source: dict[str, Any] = field(default_factory=dict)
    prior: float = 0.5
    format_version: int = FORMAT_VERSION

    # ---- lookups ------------------------------------------------------------------------------

    def step(self, step: str) -> StepCalibration:
        if step not in self.steps:
            raise CalibrationError(
                f"no calibration for step {step!r} (known: {', '.join(self.steps) or 'none'})"
            )
        return self.steps[step]

    def percentile(self, step: str, score: float, population: str = "match") -> float | None:
        """Percent (0–100) of ``population``'s pairs (``"match"`` or ``"nonmatch"``) that score
        lower than ``score`` (ties count half); None when unknown (step off, no data, NaN)."""
        cal = self.step(step)
        qs = cal._quantiles(population)
        if not cal.enabled or not qs or not _finite(score):
            return None
        return 100.0 * _cdf(np.asarray(qs, dtype=np.float64), float(score))

    def probability(self, step: str, score: float, prior: float | None = None) -> float | None:
        """Calibrated ``P(match | score)`` of one step (monotone in the score).

        Args:
            prior: the share of matching pairs to assume; default :attr:`prior` (0.5, the fit's).

        Returns:
            A probability, or None when the step has no fit (off, too few pairs) or the score is
            not finite.
        """
        cal = self.step(step)
        if not cal.fitted or not _finite(score):
            return None
        logit = float(cal.slope) * float(score) + float(cal.intercept)
        if prior is not None:
            if not 0.0 < float(prior) < 1.0:
                raise CalibrationError(f"prior must lie strictly between 0 and 1, got {prior}")
            logit += _logit(float(prior)) - _logit(self.prior)
        return _sigmoid(logit)

    def evidence(self, step: str, score: float) -> Evidence:
        """Place ``score`` among the step's matching and non-matching pairs, in numbers and words.

        ``match`` when the score is within the matching pairs' range (not in their lowest
        :data:`TYPICAL` %) and above the non-matching pairs' (above their highest
        :data:`TYPICAL` %); ``nonmatch`` the other way round; otherwise ``between`` (a gap between
        the two, or a range both share).
        """
        cal = self.step(step)
        label = STEP_LABELS.get(step, step)
        try:
            value = float(score)
        except (TypeError, ValueError):
            value = math.nan
        if not cal.enabled:
            return Evidence(step, value, "unknown", None, None, None, f"{label} is switched off")
        if not math.isfinite(value):
            return Evidence(step, value, "unknown", None, None, None, "the score is not a number")
        if not cal.available:
            n = f"{cal.n_match} matching and {cal.n_nonmatch} non-matching pairs"
            return Evidence(step, value, "unknown", None, None, None, f"too few pairs ({n})")
        pm = 100.0 * _cdf(np.asarray(cal.match_quantiles, dtype=np.float64), value)
        pn = 100.0 * _cdf(np.asarray(cal.nonmatch_quantiles, dtype=np.float64), value)
        p = self.probability(step, value)
        like_match = pm >= TYPICAL
        like_nonmatch = pn <= 100.0 - TYPICAL
        if like_match and not like_nonmatch:
            kind = "match"
        elif like_nonmatch and not like_match:
            kind = "nonmatch"
        else:
            kind = "between"
        text = _evidence_text(kind, pm, pn, p, cal)
        return Evidence(step, value, kind, pm, pn, p, text)

    def verdict(self, step: str, score: float) -> str:
        """One line: ``"typical of a true pair: higher than 99% of non-matching pairs, …"``."""
        return self.evidence(step, score).text

    # ---- (de)serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "prior": self.prior,
            "source": dict(self.source),
            "steps": {k: asdict(v) for k, v in self.steps.items()},
        }

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """Validate and build; :class:`CalibrationError` names the first field that is wrong."""
        if not isinstance(data, dict):
            raise CalibrationError("a calibration must be a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CalibrationError(f"format_version must be a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise CalibrationError(
                f"calibration format_version {version} is newer than this code reads "
                f"({FORMAT_VERSION}); update the code"
            )
        prior = data.get("prior", 0.5)
        if not _is_number(prior) or not 0.0 < float(prior) < 1.0:
            raise CalibrationError(f"prior must be a number in (0, 1), got {prior!r}")
        source = data.get("source", {})
        if not isinstance(source, dict):
            raise CalibrationError("source must be a JSON object")
        steps = data.get("steps")
        if not isinstance(steps, dict) or not steps:
            raise CalibrationError("steps must be a non-empty JSON object")
        parsed = {}
        for key, raw in steps.items():
            if key not in STEPS:
                raise CalibrationError(f"unknown step {key!r} (expected {', '.join(STEPS)})")
            parsed[key] = _step_from_dict(key, raw)
        return cls(parsed, dict(source), float(prior), version)


# ---------------------------------------------------------------------------------------------
# Computing a calibration


def calibrate_scores(
    scores: Any,
    match: np.ndarray | None = None,
    enabled: Mapping[str, bool] | None = None,
    source: Mapping[str, Any] | None = None,
    max_nonmatch: int = MAX_NONMATCH,
) -> Calibration:
    """Calibrate from all-pairs score matrices.

    Args:
        scores: ``(N, M)`` matrices per step — a mapping with some of ``total``/``l2l``/``g2l``/
            ``g2g`` (numpy arrays or tensors), or an object with those attributes (the model's
            ``StepScores``).
        match: ``(N, M)`` bool, True where caption ``c`` describes image ``i``; default the SCAN
            layout (``M = 5N``, caption ``c`` belongs to image ``c // 5``).
        enabled: step → used by the model; a step is also off when all its scores are 0.
        source: saved as :attr:`Calibration.source` (split name, sizes, checkpoint, …).
        max_nonmatch: at most this many non-matching scores per step are used (a sample with a
            fixed seed beyond it; the counts stay the true ones).

    Raises:
        CalibrationError: no matrices, shapes that differ, or no ``match`` for a non-SCAN layout.
    """
    mats = _as_matrices(scores)
    shape = next(iter(mats.values())).shape
    if match is None:
        n, m = shape
        if m != CAPS_PER_IMAGE * n:
            raise CalibrationError(
                f"scores are {n} × {m}; without `match` they must be N × 5N (caption c belongs "
                "to image c // 5)"
            )
        match = (np.arange(m)[None, :] // CAPS_PER_IMAGE) == np.arange(n)[:, None]
    match = np.asarray(match)
    if match.shape != shape or match.dtype != bool:
        raise CalibrationError(f"match must be a bool array of shape {shape}, got {match.shape}")
    sample = None
    n_non = int((~match).sum())
    if n_non > max_nonmatch:
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(n_non, size=max_nonmatch, replace=False))
    steps = {}
    for key, mat in mats.items():
        on = None if enabled is None else enabled.get(key)
        steps[key] = _calibrate_step(mat, match, on, sample)
    src = dict(source or {})
    src.setdefault("n_images", int(shape[0]))
    src.setdefault("n_captions", int(shape[1]))
    if sample is not None:
        src["nonmatch_sampled"] = int(max_nonmatch)
    return Calibration(steps, src)


def model_enabled_steps(model: Any) -> dict[str, bool]:
    """``{"total": True, "l2l": cfg.use_l2l, ...}`` from a model's config (all on if unknown)."""
    cfg = getattr(model, "cfg", None)
    out = {"total": True}
    for key in ("l2l", "g2l", "g2g"):
        out[key] = bool(getattr(cfg, f"use_{key}", True))
    return out


def calibrate_arrays(
    model: Any,
    text: Any,
    arrays: Any,
    device: Any = "cpu",
    max_words: int | None = None,
    **score_kwargs: Any,
) -> Calibration:
    """Calibrate ``model`` on a loaded SCAN split (``shan.data.precomp.SplitArrays``).

    Scores every image against every caption with :func:`shan.evaluation.compute_step_sims`
    (``score_kwargs``: its ``chunk``, ``txt_chunk``, ``progress``, ``score_chunks``). To get the
    retrieval metrics from the same pass, use ``evaluate_arrays(..., calibrate=True)`` instead.
    """
    from shan.evaluation import compute_step_sims

    if max_words is None:
        max_words = int(getattr(getattr(model, "cfg", None), "max_words", 64))
    batch = text.encode_batch(arrays.captions, max_words)
    sims = compute_step_sims(
        model, arrays.feats, arrays.masks, batch, device=device, **score_kwargs
    )
    source = {
        "split": arrays.split,
        "n_images": arrays.n_images,
        "n_captions": len(arrays.captions),
    }
    return calibrate_scores(sims, enabled=model_enabled_steps(model), source=source)


def calibrate_split(
    model: Any,
    text: Any,
    root: str | Path,
    name: str,
    split: str,
    device: Any = "cpu",
    max_images: int | None = None,
    **score_kwargs: Any,
) -> Calibration:
    """Calibrate ``model`` on ``<root>/<name>_precomp/{split}`` (e.g. the toy world's test split).

    Example (the checkpoint's own directory receives ``calibration.json``)::

        loaded = load_checkpoint("checkpoints/shan")
        cal = calibrate_split(loaded.model, loaded.text, "data", "toyworld", "test")
        save_calibration(cal, loaded.path)
    """
    from shan.data.precomp import load_split_arrays

    img_dim = getattr(getattr(model, "cfg", None), "img_dim", None)
    arrays = load_split_arrays(root, name, split, img_dim=img_dim, max_images=max_images)
    cal = calibrate_arrays(model, text, arrays, device=device, **score_kwargs)
    cal.source["name"] = name
    return cal


# ---------------------------------------------------------------------------------------------
# Files


def save_calibration(cal: Calibration, directory: str | Path) -> Path:
    """Write ``directory/calibration.json`` (atomically: a temporary file, then a rename)."""
    out = Path(directory)
    if not out.is_dir():
        raise CalibrationError(f"{out} is not a directory (save the checkpoint first)")
    path = out / CALIBRATION_NAME
    text = (
        json.dumps(cal.to_dict(), indent=1, sort_keys=True, allow_nan=False, default=_plain) + "\n"
    )
    fd, tmp = tempfile.mkstemp(prefix=".calibration.", suffix=".json", dir=out)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_calibration(directory: str | Path) -> Calibration | None:
    """Read ``directory/calibration.json``; None when the checkpoint has none.

    Raises:
        CalibrationError: the file exists but cannot be read or does not validate.
    """
    path = Path(directory) / CALIBRATION_NAME
    if not path.is_file():
        return None
    data = read_json(path, CalibrationError)
    try:
        return Calibration.from_dict(data)
    except CalibrationError as err:
        raise CalibrationError(f"{path}: {err}") from None


# ---------------------------------------------------------------------------------------------
# Helpers


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _cdf(q: np.ndarray, s: float) -> float:
    """Fraction (0–1) of a population below ``s`` from its quantiles ``q`` (ties count half)."""
    grid = np.linspace(0.0, 1.0, len(q))
    if s < q[0]:
        return 0.0
    if s > q[-1]:
        return 1.0
    lo = int(np.searchsorted(q, s, side="left"))
    hi = int(np.searchsorted(q, s, side="right"))
    if hi > lo:  # s equals one or more stored quantiles: the middle of their span
        return float((grid[lo] + grid[hi - 1]) / 2)
    q0, q1 = q[lo - 1], q[lo]
    return float(grid[lo - 1] + (s - q0) / (q1 - q0) * (grid[lo] - grid[lo - 1]))


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_matrices(scores: Any) -> dict[str, np.ndarray]:
    if isinstance(scores, Mapping):
        raw = {k: scores[k] for k in STEPS if k in scores}
        unknown = set(scores) - set(STEPS)
        if unknown:
            raise CalibrationError(f"unknown steps {sorted(unknown)} (expected {STEPS})")
    else:
        raw = {k: getattr(scores, k) for k in STEPS if getattr(scores, k, None) is not None}
    if not raw:
        raise CalibrationError(f"no score matrices given (expected some of {', '.join(STEPS)})")
    mats = {k: _to_numpy(v) for k, v in raw.items()}
    shapes = {v.shape for v in mats.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise CalibrationError(f"score matrices must share one (N, M) shape, got {shapes}")
    n, m = next(iter(shapes))
    if n < 1 or m < 1:
        raise CalibrationError(f"score matrices are empty ({n} × {m})")
    return mats


def _quantiles(values: np.ndarray) -> list[float]:
    if len(values) < MIN_PAIRS:
        return []
    return [float(v) for v in np.quantile(values, np.linspace(0.0, 1.0, N_QUANTILES))]


def _auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """P(a random ``pos`` value > a random ``neg`` value), ties counted half (Mann–Whitney U)."""
    if len(pos) == 0 or len(neg) == 0:
        return None
    neg_sorted = np.sort(neg)
    below = np.searchsorted(neg_sorted, pos, side="left")
    equal = np.searchsorted(neg_sorted, pos, side="right") - below
    return float((below.sum() + 0.5 * equal.sum()) / (len(pos) * len(neg)))


def _fit_points(values: np.ndarray) -> np.ndarray:
    """A population as at most :data:`FIT_POINTS` equally weighted points (its mid-quantiles)."""
    if len(values) <= FIT_POINTS:
        return values
    return np.quantile(values, (np.arange(FIT_POINTS) + 0.5) / FIT_POINTS)


def _fit_logistic(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float] | None:
    """``(a, b)`` of ``P(match | s) = σ(a s + b)``, the two populations weighted equally.

    Newton's method with step halving on the standardised score, with a ridge penalty
    :data:`RIDGE` on the slope so perfectly separated populations still give a finite fit.
    """
    if len(pos) < MIN_PAIRS or len(neg) < MIN_PAIRS:
        return None
    xp, xn = _fit_points(pos), _fit_points(neg)
    x = np.concatenate([xp, xn])
    y = np.concatenate([np.ones(len(xp)), np.zeros(len(xn))])
    w = np.concatenate([np.full(len(xp), 0.5 / len(xp)), np.full(len(xn), 0.5 / len(xn))])
    mu = float((w * x).sum())
    sd = float(np.sqrt((w * (x - mu) ** 2).sum()))
    if not sd > 1e-12:  # one value for everything: the score says nothing
        return 0.0, 0.0
    z = (x - mu) / sd

    def loss(t: np.ndarray) -> float:
        u = t[0] * z + t[1]
        return float((w * (np.logaddexp(0.0, u) - y * u)).sum() + 0.5 * RIDGE * t[0] ** 2)

    theta = np.zeros(2)
    current = loss(theta)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(theta[0] * z + theta[1])))
        r = w * (p - y)
        grad = np.array([(r * z).sum() + RIDGE * theta[0], r.sum()])
        h = w * p * (1.0 - p)
        hess = np.array(
            [[(h * z * z).sum() + RIDGE, (h * z).sum()], [(h * z).sum(), h.sum() + 1e-12]]
        )
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-6:
            trial = theta - scale * step
            value = loss(trial)
            if value <= current:
                break
            scale /= 2
        else:
            break
        theta, done = trial, current - value < 1e-14
        current = value
        if done:
            break
    a = float(theta[0] / sd)
    return a, float(theta[1] - a * mu)


def _calibrate_step(
    mat: np.ndarray, match: np.ndarray, enabled: bool | None, sample: np.ndarray | None
) -> StepCalibration:
    finite = np.isfinite(mat)
    pos = mat[match & finite]
    neg_all = mat[~match]
    neg_ok = np.isfinite(neg_all)
    n_dropped = int((~finite).sum())
    n_neg = int(neg_ok.sum())
    neg = neg_all[sample] if sample is not None else neg_all
    neg = neg[np.isfinite(neg)]
    # off when the model says so, or when every score is exactly 0 (how a disabled step scores)
    enabled = enabled is not False and bool(np.any(pos != 0) or np.any(neg != 0))
    if not enabled:
        return StepCalibration(False, len(pos), n_neg, n_dropped)
    fit = _fit_logistic(pos, neg)
    return StepCalibration(
        enabled=True,
        n_match=len(pos),
        n_nonmatch=n_neg,
        n_dropped=n_dropped,
        match_quantiles=_quantiles(pos),
        nonmatch_quantiles=_quantiles(neg),
        auc=_auc(pos, neg),
        slope=None if fit is None else fit[0],
        intercept=None if fit is None else fit[1],
    )


def _plain(obj: Any) -> Any:
    """JSON fallback for ``source`` values: numpy/torch scalars → numbers, anything else → str."""
    return obj.item() if hasattr(obj, "item") else str(obj)


def _step_from_dict(key: str, raw: Any) -> StepCalibration:
    where = f"steps.{key}"
    if not isinstance(raw, dict):
        raise CalibrationError(f"{where} must be a JSON object")
    enabled = raw.get("enabled")
    if not isinstance(enabled, bool):
        raise CalibrationError(f"{where}.enabled must be true or false, got {enabled!r}")
    counts = {}
    for name in ("n_match", "n_nonmatch", "n_dropped"):
        v = raw.get(name, 0)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise CalibrationError(f"{where}.{name} must be a non-negative integer, got {v!r}")
        counts[name] = v
    qs = {}
    for name in ("match_quantiles", "nonmatch_quantiles"):
        v = raw.get(name, [])
        if not isinstance(v, list) or not all(_is_number(x) for x in v):
            raise CalibrationError(f"{where}.{name} must be a list of finite numbers")
        if v and (len(v) < 2 or any(b < a for a, b in zip(v, v[1:]))):
            raise CalibrationError(f"{where}.{name} must be empty or >= 2 ascending numbers")
        qs[name] = [float(x) for x in v]
    opt = {}
    for name in ("auc", "slope", "intercept"):
        v = raw.get(name)
        if v is not None and not _is_number(v):
            raise CalibrationError(f"{where}.{name} must be a finite number or null, got {v!r}")
        opt[name] = None if v is None else float(v)
    if opt["auc"] is not None and not 0.0 <= opt["auc"] <= 1.0:
        raise CalibrationError(f"{where}.auc must lie in [0, 1], got {opt['auc']}")
    return StepCalibration(enabled=enabled, **counts, **qs, **opt)


def _pct(p: float) -> str:
    """A percentage for a claim "higher than X %": rounded down, so it never overclaims."""
    return f"{math.floor(p + 1e-9):.0f}%"


def _prob(p: float) -> str:
    """``≈ 0.73``; ``< 0.01`` / ``> 0.99`` at the ends (never a bare 0.00 or 1.00)."""
    if p < 0.005:
        return "< 0.01"
    if p > 0.995:
        return "> 0.99"
    return f"≈ {p:.2f}"


def _ordinal(p: float) -> str:
    n = min(max(round(p), 0), 100)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _evidence_text(kind: str, pm: float, pn: float, p: float | None, cal: StepCalibration) -> str:
    """One line from the numbers; the kind's wording and every figure come from the arguments."""
    prob = "" if p is None else f" (P(match) {_prob(p)} at even odds)"
    if pn >= 100.0:
        above_non = f"higher than all {cal.n_nonmatch} non-matching pairs"
    else:
        above_non = f"higher than {_pct(pn)} of non-matching pairs"
    if pm <= 0.0:
        below_true = f"lower than all {cal.n_match} true pairs"
    else:
        below_true = f"lower than {_pct(100.0 - pm)} of true pairs"
    if kind == "match":
        return f"{KIND_LABELS[kind]}: {above_non}, {_ordinal(pm)} percentile of true pairs{prob}"
    if kind == "nonmatch":
        return (
            f"{KIND_LABELS[kind]}: {below_true}, {_ordinal(pn)} percentile of non-matching "
            f"pairs{prob}"
        )
    if pm < TYPICAL and pn > 100.0 - TYPICAL:
        return f"{KIND_LABELS[kind]}: {below_true} but {above_non}{prob}"
    return (
        f"{KIND_LABELS[kind]}: {_ordinal(pm)} percentile of true pairs and {_ordinal(pn)} of "
        f"non-matching pairs — both kinds score like this{prob}"
    )


__all__ = [
    "CALIBRATION_NAME",
    "FORMAT_VERSION",
    "KINDS",
    "KIND_LABELS",
    "STEPS",
    "Calibration",
    "CalibrationError",
    "Evidence",
    "StepCalibration",
    "calibrate_arrays",
    "calibrate_scores",
    "calibrate_split",
    "load_calibration",
    "model_enabled_steps",
    "save_calibration",
]
