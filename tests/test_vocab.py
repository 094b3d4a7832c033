"""Tokenizer, word vocabulary and transformer word-piece processor."""

from __future__ import annotations

import json

import pytest
import torch

from shan.data.vocab import (
    PAD_ID,
    UNK_ID,
    TransformerTextProcessor,
    VocabError,
    Vocabulary,
    load_text_processor,
    tokenize,
)


def test_tokenize_lowercases_and_splits_punctuation() -> None:
    assert tokenize("A Dog, running!") == ["a", "dog", ",", "running", "!"]
    assert tokenize("the man's hat.") == ["the", "man's", "hat", "."]
    assert tokenize("") == []
    assert tokenize("   \t\n ") == []


def test_tokenize_unicode_nfkc() -> None:
    # full-width letters and the "fi" ligature normalise to plain ASCII; accents survive
    assert tokenize("ＤＯＧ ﬁne Café") == ["dog", "fine", "café"]
    assert tokenize("Straße") == ["straße"]


def test_tokenize_rejects_bytes() -> None:
    with pytest.raises(TypeError, match="decode"):
        tokenize(b"a dog")  # type: ignore[arg-type]


def test_build_order_and_special_ids() -> None:
    v = Vocabulary.build(["A dog runs.", "a cat", "a dog"])
    assert v.itos[:2] == ["<pad>", "<unk>"]
    assert v.stoi["<pad>"] == PAD_ID == 0 and v.stoi["<unk>"] == UNK_ID == 1
    # by count (a:3, dog:2), ties alphabetical
    assert v.itos[2:] == ["a", "dog", ".", "cat", "runs"]
    assert "dog" in v and "zebra" not in v
    assert v.encode("a zebra dog") == [2, 1, 3]


def test_min_count_drops_rare_words() -> None:
    v = Vocabulary.build(["a dog", "a cat", "a dog"], min_count=2)
    assert v.itos == ["<pad>", "<unk>", "a", "dog"]
    with pytest.raises(VocabError):
        Vocabulary.build(["a"], min_count=0)


def test_encode_batch_padding_lengths_flags() -> None:
    v = Vocabulary.build(["a dog runs on grass"])
    b = v.encode_batch(["a dog runs on grass", "", "zebra giraffe", "a dog"], max_words=3)
    assert b.tokens.dtype == torch.long and b.tokens.shape == (4, 3)
    assert b.lengths.tolist() == [3, 1, 2, 2]
    assert b.truncated == [True, False, False, False]
    # empty caption -> one <unk>
    assert b.tokens[1].tolist() == [UNK_ID, 0, 0] and b.words[1] == ["<unk>"]
    assert b.unknown[1] == [True]
    # no known word -> all <unk> ids, original words kept for display
    assert b.tokens[2].tolist() == [UNK_ID, UNK_ID, 0]
    assert b.words[2] == ["zebra", "giraffe"] and b.unknown[2] == [True, True]
    assert b.tokens[3, 2].item() == PAD_ID
    for m in range(4):
        assert len(b.words[m]) == len(b.unknown[m]) == b.lengths[m]
    assert (b.lengths >= 1).all()


def test_encode_batch_bad_input() -> None:
    v = Vocabulary.build(["a"])
    with pytest.raises(TypeError):
        v.encode_batch("a dog", 5)  # a single str, not a list
    with pytest.raises(TypeError):
        v.encode_batch([b"a dog"], 5)  # type: ignore[list-item]
    with pytest.raises(VocabError):
        v.encode_batch(["a"], 0)


def test_select_repads() -> None:
    v = Vocabulary.build(["a b c d"])
    b = v.encode_batch(["a b c d", "a"], 10)
    sub = b.select([1])
    assert sub.tokens.shape == (1, 1) and sub.words == [["a"]]


def test_save_load_roundtrip(tmp_path) -> None:
    v = Vocabulary.build(["Ünïcode wörds, here!", "more words"])
    p = tmp_path / "vocab.json"
    v.save(p)
    w = Vocabulary.load(p)
    assert w == v and w.itos == v.itos
    assert isinstance(load_text_processor(p), Vocabulary)


@pytest.mark.parametrize(
    "content",
    ["not json", json.dumps({"itos": ["a", "b"]}), json.dumps([1, 2]), json.dumps({"itos": []})],
)
def test_load_malformed(tmp_path, content: str) -> None:
    p = tmp_path / "vocab.json"
    p.write_text(content)
    with pytest.raises(VocabError):
        Vocabulary.load(p)


def test_load_missing(tmp_path) -> None:
    with pytest.raises(VocabError, match="not found"):
        Vocabulary.load(tmp_path / "nope.json")


@pytest.fixture()
def bert_dir(tmp_path):
    """A tiny local BERT word-piece tokenizer (no download)."""
    import inspect

    import transformers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "run", "##s", "on", "grass"]
    if "vocab" in inspect.signature(transformers.BertTokenizer.__init__).parameters:  # v5
        tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    else:  # transformers 4.x
        vocab_file = tmp_path / "vocab.txt"
        vocab_file.write_text("\n".join(words) + "\n")
        tok = transformers.BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    out = tmp_path / "bert"
    tok.save_pretrained(out)
    return out


def test_transformer_processor(bert_dir, tmp_path) -> None:
    t = TransformerTextProcessor(bert_dir, max_words=6)
    b = t.encode_batch(["A dog runs on grass", "", "zebra"])
    assert b.words[0] == ["[CLS]", "a", "dog", "run", "##s", "[SEP]"]  # truncated, [SEP] kept
    assert b.truncated == [True, False, False]
    assert b.words[1] == ["[CLS]", "[UNK]", "[SEP]"] and b.unknown[1] == [False, True, False]
    assert b.unknown[2] == [False, True, False]
    assert b.lengths.tolist() == [6, 3, 3] and b.tokens[1, 3:].eq(0).all()
    p = tmp_path / "text.json"
    t.save(p)
    u = load_text_processor(p)
    assert isinstance(u, TransformerTextProcessor) and u.model_dir == str(bert_dir)
    assert torch.equal(u.encode_batch(["a dog"]).tokens, t.encode_batch(["a dog"]).tokens)


def test_transformer_processor_missing_dir(tmp_path) -> None:
    with pytest.raises(VocabError, match="not found"):
        TransformerTextProcessor(tmp_path / "nope")
