"""The speed benchmarks: their SCAN-style reference computes SCAN's t2i score, and both scripts run
end to end at CI sizes and print their ratio lines (no timing is asserted: the figures are for
people, the benchmarks print them)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from benchmarks.scan_reference import ScanStyle, scan_t2i


def test_scan_t2i_is_scans_formula_pair_by_pair() -> None:
    """For each pair: words attend to regions (clipped_l2norm of leaky-ReLU affinities over the
    caption's real words, softmax over regions at lambda 9), score = mean over words of cos."""
    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(3, 5, 16, generator=g), dim=-1)
    captions = F.normalize(torch.randn(4, 7, 16, generator=g), dim=-1)
    lengths = [7, 3, 5, 1]
    got = scan_t2i(images, captions, lengths)
    assert got.shape == (3, 4)
    for i in range(3):
        for c, n in enumerate(lengths):
            words, regions = captions[c, :n], images[i]
            a = F.leaky_relu(regions @ words.T, 0.1)  # (k, n)
            a = a / (a.norm(dim=1, keepdim=True) + 1e-8)
            attn = torch.softmax(9.0 * a.T, dim=1)  # (n, k)
            want = F.cosine_similarity(words, attn @ regions, dim=1).mean()
            assert got[i, c] == pytest.approx(float(want), abs=1e-6)


def test_scan_style_model_scores_a_batch_and_trains() -> None:
    torch.manual_seed(0)
    model = ScanStyle(img_dim=12, embed_dim=16, vocab_size=30, word_dim=8)
    feats = torch.rand(4, 5, 12)
    tokens = torch.randint(2, 30, (4, 6))
    lengths = torch.tensor([6, 2, 4, 5])
    scores = model(feats, tokens, lengths)
    assert scores.shape == (4, 4)
    scores.sum().backward()
    assert model.img_enc.fc.weight.grad is not None


def _ratio(text: str, name: str) -> float:
    match = re.search(rf"^{name}=([0-9.]+)$", text, flags=re.M)
    assert match, f"no {name}= line in:\n{text}"
    return float(match.group(1))


@pytest.mark.slow
def test_bench_scoring_runs_at_ci_size(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_scoring

    threads = torch.get_num_threads()
    try:
        bench_scoring.main(
            ["--images", "6", "--captions", "20", "--dim", "64", "--repeats", "1", "--threads", "1"]
        )
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert _ratio(out, "ratio_vs_scan") > 0 and _ratio(out, "ratio_vs_scan_cpu") > 0
    assert "SHAN" in out and "SCAN-style" in out and "memory:" in out


@pytest.mark.slow
def test_bench_train_runs_at_ci_size(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import bench_train

    threads = torch.get_num_threads()
    args = ["--batch", "6", "--dim", "32", "--img-dim", "48", "--regions", "5", "--word-dim", "8"]
    args += ["--vocab", "50", "--steps", "1", "--repeats", "1", "--threads", "1"]
    try:
        bench_train.main(args)
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert _ratio(out, "ratio_train_vs_scan") > 0
    assert "steps/s" in out and "30 epochs" in out
