"""build_tokenizer gives the reference's bert-base-uncased ids offline (captions_and_positive_maps.json)."""
import json

import pytest

from glip.text.tokenizer import build_tokenizer
from helpers import REFERENCE


@pytest.fixture(scope="module")
def captions():
    return json.loads((REFERENCE / "captions_and_positive_maps.json").read_text())


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("bert-base-uncased")


@pytest.mark.parametrize("key", ["coco_detection_prompt", "free_form_main"])
def test_ids_match_reference(tokenizer, captions, key):
    entry = captions[key]
    enc = tokenizer([entry["caption"]], max_length=256, padding="max_length", truncation=True,
                    return_tensors="pt")
    n = len(entry["input_ids"])
    assert enc["input_ids"].shape == (1, 256)
    assert enc["input_ids"][0, :n].tolist() == entry["input_ids"]
    assert enc["input_ids"][0, n:].eq(0).all()
    assert enc["attention_mask"][0].tolist() == [1] * n + [0] * (256 - n)
    assert tokenizer.convert_ids_to_tokens(entry["input_ids"]) == entry["tokens"]


def test_char_to_token_spans(tokenizer, captions):
    entry = captions["free_form_main"]
    enc = tokenizer(entry["caption"])
    for label, spans in zip(sorted(entry["positive_map_label_to_token"], key=int),
                            entry["tokens_positive_char_spans"]):
        ((beg, end),) = spans
        first, last = enc.char_to_token(beg), enc.char_to_token(end - 1)
        assert list(range(first, last + 1)) == entry["positive_map_label_to_token"][label]


def test_local_folder(tokenizer):
    from glip.text.pretrained import SHIPPED
    local = build_tokenizer(str(SHIPPED["bert-base-uncased"]))
    assert local("a cat")["input_ids"] == tokenizer("a cat")["input_ids"] == [101, 1037, 4937, 102]


def test_unknown_name_raises_naming_it():
    with pytest.raises(FileNotFoundError, match="no-such-model-xyz"):
        build_tokenizer("no-such-model-xyz")


def test_the_model_and_data_names_are_the_text_tokenizer():
    from glip.data.positive_map import load_tokenizer
    from glip.modeling.language import build_tokenizer as model_name
    from glip.modeling.language.tokenizer import build_tokenizer as module_name

    assert model_name is module_name is build_tokenizer
    assert load_tokenizer().vocab == build_tokenizer("bert-base-uncased").vocab
