"""BERT language backbone: golden parity with the reference BERT outputs and the language-dict semantics."""
import pytest
import torch

from transformers import BertConfig

from glip.modeling.language.bert import BertEncoder, LanguageBackbone, build_bert_backbone
from helpers import load_golden
from helpers.weights import fill_


@pytest.fixture(scope="module")
def backbone():
    model = build_bert_backbone("bert-base-uncased")
    fill_(model, prefix="language_backbone.")
    return model.eval()


@pytest.fixture(scope="module")
def captions():
    return load_golden("infer_astronaut_320.pt")["size320"]["captions"]


def _inputs(caption):
    return caption["input_ids_padded_256"].view(1, -1), caption["attention_mask_256"].view(1, -1)


@pytest.mark.parametrize("key", [pytest.param("coco", marks=pytest.mark.slow), "free"])
def test_matches_reference_bert_outputs(backbone, captions, key):
    caption = captions[key]
    n = caption["num_valid_tokens"]
    ids, mask = _inputs(caption)
    with torch.no_grad():
        out = backbone(ids, mask)
    assert out["hidden"].shape == out["embedded"].shape == (1, 256, 768)
    assert out["aggregate"].shape == (1, 768)
    assert torch.equal(out["masks"], mask)
    ref = caption["lang"]
    torch.testing.assert_close(out["hidden"][:, :n], ref["hidden"], rtol=0, atol=1e-4)
    torch.testing.assert_close(out["embedded"][:, :n], ref["embedded"], rtol=0, atol=1e-4)
    torch.testing.assert_close(out["aggregate"], ref["aggregate"], rtol=0, atol=1e-4)
    assert out["embedded"][:, n:].eq(0).all()
    assert out["hidden"][:, n:].abs().sum() > 0  # hidden keeps the padded positions


def _tiny_backbone(**kwargs):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=16)
    config._attn_implementation = "eager"
    return LanguageBackbone(BertEncoder(config, **kwargs)).eval()


def _tiny_inputs():
    ids = torch.tensor([[1, 7, 9, 11, 3, 0, 0, 0], [1, 5, 4, 0, 0, 0, 0, 0]])
    return ids, (ids != 0).long()


def test_language_dict_semantics_num_layers_2():
    model = _tiny_backbone(num_layers=2)
    ids, mask = _tiny_inputs()
    with torch.no_grad():
        out = model(ids, mask)
        layers = model.body.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    # the reference divides the mean of the last N layers once more by N
    expected = (layers[-1] + layers[-2]) / 2 / 2 * mask[..., None]
    torch.testing.assert_close(out["embedded"], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["aggregate"], expected.sum(1) / mask.sum(1, keepdim=True), rtol=0, atol=1e-6)
    torch.testing.assert_close(out["hidden"], layers[-1], rtol=0, atol=0)
    assert out["masks"] is mask


def test_keep_padding_false_trims_to_longest_caption():
    full_model = _tiny_backbone()
    trimmed_model = _tiny_backbone(keep_padding=False)
    trimmed_model.load_state_dict(full_model.state_dict())
    ids, mask = _tiny_inputs()
    with torch.no_grad():
        full, trimmed = full_model(ids, mask), trimmed_model(ids, mask)
    assert trimmed["hidden"].shape == (2, 5, 32) and trimmed["masks"].shape == (2, 8)
    valid = mask[:, :5, None].bool().expand(-1, -1, 32)
    torch.testing.assert_close(trimmed["hidden"][valid], full["hidden"][:, :5][valid], rtol=0, atol=1e-5)
    torch.testing.assert_close(trimmed["aggregate"], full["aggregate"], rtol=0, atol=1e-5)


def test_eager_attention_and_no_pooler(backbone):
    assert backbone.body.model.config._attn_implementation == "eager"
    assert backbone.body.model.pooler is None
    assert backbone.language_dim == 768


def test_dropout_probabilities_stay_as_in_config_and_can_be_zeroed(backbone):
    dropouts = [m for m in backbone.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == pytest.approx(0.1) for m in dropouts)
    model = _tiny_backbone()
    ids, mask = _tiny_inputs()
    with torch.no_grad():
        ref = model(ids, mask)["hidden"]
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        out = model.train()(ids, mask)["hidden"]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_load_pretrained_from_local_folder(tmp_path):
    source = _tiny_backbone().body.model
    source.save_pretrained(tmp_path)
    loaded = build_bert_backbone(str(tmp_path), load_pretrained=True)
    random = build_bert_backbone(str(tmp_path), load_pretrained=False)
    ref = source.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.body.model.state_dict().items())
    random_weight = random.body.model.embeddings.word_embeddings.weight
    assert not torch.equal(random_weight, ref["embeddings.word_embeddings.weight"])
    assert loaded.body.model.config._attn_implementation == "eager"
