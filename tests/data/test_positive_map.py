"""Caption construction and positive maps against hand-checked BERT ids and the reference goldens."""
import json

import pytest
import torch
from helpers import REFERENCE

from glip.data import positive_map as pm


@pytest.fixture(scope="module")
def tokenizer():
    return pm.load_tokenizer()


@pytest.fixture(scope="module")
def golden():
    with open(REFERENCE / "captions_and_positive_maps.json") as f:
        return json.load(f)


def test_clean_name():
    assert pm.clean_name("traffic_light") == "traffic light"
    assert pm.clean_name("bat (animal)") == "bat "
    assert pm.clean_name("person") == "person"


def test_build_caption_spans_and_separator():
    caption, spans = pm.build_caption(["cat", "hot_dog", "dog"], ". ")
    assert caption == "cat. hot dog. dog"
    assert [caption[b:e] for b, e in spans] == ["cat", "hot dog", "dog"]


def test_build_caption_with_prompt():
    prompt = [{"prefix": "a ", "name": "cat", "suffix": " animal"}, {"prefix": "", "name": "dog", "suffix": "!"}]
    caption, spans = pm.build_caption(["x", "y"], ". ", caption_prompt=prompt)
    assert caption == "a cat animal. dog!"
    assert spans == [(2, 5), (14, 17)]


def test_coco_prompt_ids_and_label_to_token(tokenizer, golden):
    ref = golden["coco_detection_prompt"]
    names = ref["category_names_in_label_order"]
    query, label_to_token = pm.create_queries_and_maps(list(range(1, 81)), names, tokenizer, ". ")
    assert query == ref["caption"]
    ids = tokenizer(query)["input_ids"]
    assert ids == ref["input_ids"]
    assert len(ids) == 194
    # hand-checked WordPiece ids
    assert ids[1] == 2711 and ids[2] == 1012  # 'person' '.'
    assert ids[191:193] == [11868, 18623]  # 'tooth' '##brush'
    assert label_to_token[10] == [19, 20]  # traffic light owns two tokens
    expected = {int(k): v for k, v in ref["positive_map_label_to_token"].items()}
    assert label_to_token == expected


def test_free_caption_positive_map(tokenizer, golden):
    ref = golden["free_form_main"]
    tokenized = tokenizer([ref["caption"]], return_tensors="pt")
    assert tokenized["input_ids"][0].tolist() == ref["input_ids"]
    spans = ref["tokens_positive_char_spans"]
    positive = pm.create_positive_map(tokenized, spans)
    assert positive.shape == (2, 256)
    torch.testing.assert_close(positive[0, 1:3], torch.full((2,), 1 / (2 + 1e-6)))
    torch.testing.assert_close(positive[1, 5:8], torch.full((3,), 1 / (3 + 1e-6)))
    assert positive.sum().item() == pytest.approx(2.0, abs=1e-5)
    binary = pm.binarize_positive_map(positive)
    assert binary.sum().item() == 5
    label_to_token = pm.create_positive_map_label_to_token_from_positive_map(binary, plus=1)
    assert label_to_token == {int(k): v for k, v in ref["positive_map_label_to_token"].items()}


def test_span_fallbacks(tokenizer):
    caption = "a  cat "
    tokenized = tokenizer(caption)
    # span starting on a space falls back to beg+1, ending past the word falls back to end-2
    assert pm.span_to_token_range(tokenized, 1, 7) == (2, 2)
    # a span of spaces only is skipped
    positive = pm.create_positive_map(tokenized, [[(1, 2)]])
    assert positive.sum() == 0


def test_queries_chunks_and_suppress(tokenizer):
    cats = {1: "cat", 2: "dog", 3: "traffic_light"}
    queries, maps = pm.create_queries_and_maps_from_categories(cats, tokenizer, chunk_size=2)
    assert queries == ["cat. dog", "traffic light"]
    assert maps == [{1: [1], 2: [3]}, {3: [1, 2]}]
    query, _ = pm.create_queries_and_maps([1], ["cat"], tokenizer, additional_labels=["sky", "grass"])
    assert query == "cat. sky. grass"


def test_greenlight_and_od_label_maps(tokenizer):
    tokenized = tokenizer("cat. dog", return_tensors="pt")
    green = pm.create_greenlight_map([(0, 3)], tokenized)
    assert green[1] == 1 and green.sum() == 1
    assert (pm.create_greenlight_map([(0, 3), (-1, -1, -1)], tokenized) == -1).all()
    od = pm.create_positive_map_for_od_labels(tokenized, {4: (0, 3), 7: (5, 8)})
    assert od[1] == 4 and od[3] == 7 and od[0] == -1 and od[2] == -1


def test_queries_from_dataset_and_cfg(tokenizer, golden):
    from glip.config import cfg as default_cfg

    class _Coco:
        def categories(self):
            return {i + 1: n for i, n in enumerate(golden["coco_detection_prompt"]["category_names_in_label_order"])}

    cfg = default_cfg.clone()
    cfg.merge_from_list(["DATASETS.SEPARATION_TOKENS", ". "])
    queries, maps = pm.create_queries_and_maps_from_dataset(_Coco(), cfg, tokenizer)
    assert queries == [golden["coco_detection_prompt"]["caption"]]
    assert maps[0][80] == [191, 192]
    cfg.merge_from_list(["TEST.CHUNKED_EVALUATION", 40])
    queries, maps = pm.create_queries_and_maps_from_dataset(_Coco(), cfg, tokenizer)
    assert len(queries) == 2 and queries[1].startswith("wine glass. ") and maps[1][41] == [1, 2]
