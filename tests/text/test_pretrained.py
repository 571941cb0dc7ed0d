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
