"""Offline phrase extraction for free captions (glip/engine/phrases.py)."""
import sys
import types

import pytest

from glip.engine import phrases
from glip.engine.phrases import Phrase, extract_phrases, is_separator_list, rule_based_noun_phrases


def texts(found):
    return [p.text for p in found]


@pytest.mark.parametrize("caption, expected", [
    # the reference goldens' free caption: phrases "a cat" [0, 5) and "a wooden table" [17, 31)
    ("a cat sitting on a wooden table", [("a cat", 0, 5), ("a wooden table", 17, 31)]),
    ("A man riding a horse next to a red car", [("A man", 0, 5), ("a horse", 13, 20), ("a red car", 29, 38)]),
    ("two dogs and a running cat in the park", [("two dogs", 0, 8), ("a running cat", 13, 26), ("the park", 30, 38)]),
    ("the small brown dog is playing with a ball", [("the small brown dog", 0, 19), ("a ball", 36, 42)]),
    ("person", [("person", 0, 6)]),
])
def test_rule_based_noun_phrases(caption, expected):
    found = rule_based_noun_phrases(caption)
    assert [tuple(p) for p in found] == expected
    for p in found:
        assert caption[p.beg:p.end] == p.text


@pytest.mark.parametrize("caption, expected", [
    ("person. dog. traffic light.", ["person", "dog", "traffic light"]),
    ("person . bicycle . car . ", ["person", "bicycle", "car"]),
    ("hair drier.", ["hair drier"]),
])
def test_separator_captions_split_without_parser(caption, expected, monkeypatch):
    monkeypatch.setattr(phrases, "load_spacy", lambda: pytest.fail("no parser for a. b. c. captions"))
    assert is_separator_list(caption)
    found = extract_phrases(caption)
    assert texts(found) == expected
    assert all(caption[p.beg:p.end] == p.text for p in found)


def test_sentences_are_not_separator_lists():
    assert not is_separator_list("A cat sits on a wooden table next to the window. It sleeps.")
    assert not is_separator_list("a cat sitting on a wooden table")


def test_auto_uses_spacy_when_installed(monkeypatch):
    class Chunk:
        def __init__(self, text, beg):
            self.text, self.start_char, self.end_char = text, beg, beg + len(text)

    class Doc:
        noun_chunks = [Chunk("a cat", 0), Chunk("a wooden table", 17)]

    fake_nlp = lambda caption: Doc()  # noqa: E731
    monkeypatch.setattr(phrases, "load_spacy", lambda: fake_nlp)
    expected = [Phrase("a cat", 0, 5), Phrase("a wooden table", 17, 31)]
    assert extract_phrases("a cat sitting on a wooden table") == expected


def test_rules_without_spacy(monkeypatch):
    phrases.load_spacy.cache_clear()
    monkeypatch.setitem(sys.modules, "spacy", None)  # import fails
    try:
        assert phrases.load_spacy() is None
        assert texts(extract_phrases("a cat sitting on a wooden table")) == ["a cat", "a wooden table"]
        with pytest.raises(ImportError, match="spacy"):
            extract_phrases("a cat", method="spacy")
    finally:
        phrases.load_spacy.cache_clear()


def test_spacy_model_not_installed(monkeypatch):
    def missing(name):
        raise OSError(f"[E050] Can't find model '{name}'")

    phrases.load_spacy.cache_clear()
    monkeypatch.setitem(sys.modules, "spacy", types.SimpleNamespace(load=missing))
    try:
        assert phrases.load_spacy() is None
    finally:
        phrases.load_spacy.cache_clear()


@pytest.mark.parametrize("caption", ["", "   ", None])
def test_empty_caption_raises(caption):
    with pytest.raises(ValueError, match="empty"):
        extract_phrases(caption)


def test_no_phrase_raises():
    with pytest.raises(ValueError, match="no phrase"):
        extract_phrases("it is on the", method="rules")


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown"):
        extract_phrases("a cat", method="nltk")
