"""Knowledge-augmented class texts (GLIPKNOW.*) from a hand-made file in the reference's knowledge format."""
import json
from types import SimpleNamespace

import pytest
from helpers import FIXTURES

from glip.config import cfg as default_cfg
from glip.data.knowledge import knowledge_prompts, knowledge_text, knowledge_texts, load_knowledge

KNOWLEDGE = FIXTURES / "knowledge" / "tiny_knowledge.yaml"


@pytest.fixture(scope="module")
def knowledge():
    return load_knowledge(str(KNOWLEDGE))


def test_load_yaml_and_json(knowledge, tmp_path):
    assert set(knowledge) == {"cat", "traffic_light", ""}
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"dog": {"clean_name": "dog"}}))
    assert load_knowledge(str(path)) == {"dog": {"clean_name": "dog"}}
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must map class names"):
        load_knowledge(str(path))


def test_wiki_and_gpt3_joins_the_definition_and_the_first_sentences(knowledge):
    text = knowledge_text("cat", knowledge, wiki_and_gpt3=True, gpt3_num=2)
    assert text == ("cat: A small domesticated carnivorous mammal. A small furry animal with whiskers.  "
                    "A pet that purrs.")
    # def_wiki null: the reference's concatenation fails and the plain name is used
    assert knowledge_text("traffic_light", knowledge, wiki_and_gpt3=True) is None


def test_one_knowledge_type(knowledge):
    assert knowledge_text("cat", knowledge, "def_wn") == "cat: feline mammal usually having thick soft fur"
    assert knowledge_text("cat", knowledge, "gpt3", gpt3_num=1) == "cat:  A small furry animal with whiskers."
    assert knowledge_text("cat", knowledge, "path_wn", gpt3_num=2) == "cat: cat feline"
    # empty or absent field: the clean name alone
    assert knowledge_text("traffic_light", knowledge, "path_wn") == "traffic light"
    assert knowledge_text("traffic_light", knowledge, "def_wiki") == "traffic light"
    assert knowledge_text("traffic_light", knowledge, "no_such_field") == "traffic light"
    assert knowledge_text("traffic_light", knowledge, "") == "traffic light"
    # a class without an entry falls back
    assert knowledge_text("tree", knowledge, "def_wn") is None


def test_texts_fall_back_to_plain_names(knowledge, caplog):
    with caplog.at_level("WARNING"):
        texts = knowledge_texts(["tree", "cat"], knowledge, "def_wn")
    assert texts == ["tree", "cat: feline mammal usually having thick soft fur"]
    assert "['tree']" in caplog.text


def test_prompts_of_a_dataset_one_text_and_one_position_per_category():
    dataset = SimpleNamespace(categories=lambda: {7: "tree", 1: "cat", 3: "traffic_light"})
    c = default_cfg.clone()
    c.GLIPKNOW.KNOWLEDGE_FILE = str(KNOWLEDGE)
    c.GLIPKNOW.KNOWLEDGE_TYPE = "def_wn"
    queries, maps = knowledge_prompts(dataset, c)
    assert queries == [["cat: feline mammal usually having thick soft fur",
                        "traffic light: a visual signal to control the flow of traffic at intersections", "tree"]]
    assert maps == [{1: [0], 3: [1], 7: [2]}]
    c.GLIPKNOW.KNOWLEDGE_FILE = ""  # no file: the plain names, still one text per class
    assert knowledge_prompts(dataset, c)[0] == [["cat", "traffic_light", "tree"]]
