"""The shared training entry (glip/engine/run.py): weights at start (resume / MODEL.WEIGHT / pretrained BERT),
restarting the loader after a resume, the monitored evaluation score and BN reset (freezing: tests/modeling/
test_freezing.py)."""
import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel

from glip.config import cfg as default_cfg
from glip.data.samplers import IterationBasedBatchSampler
from glip.engine import run


def _tiny_bert():
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=20)
    return BertModel(config, add_pooling_layer=False)


class FakeGlip(nn.Module):
    """The attribute layout of the detector that run.py touches."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.body = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        self.backbone.fpn = nn.Linear(4, 4)
        self.language_backbone = nn.Module()
        self.language_backbone.body = nn.Module()
        self.language_backbone.body.model = _tiny_bert()
        self.rpn = nn.Linear(4, 2)


class FakeCheckpointer:
    def __init__(self, has_checkpoint=False):
        self._has = has_checkpoint
        self.calls = []

    def has_checkpoint(self):
        return self._has

    def load(self, f=None, resume=True, skip_optimizer=False):
        self.calls.append((f, resume, skip_optimizer))
        return {"iteration": 7}


def _cfg(weight="", model_type="bert-base-uncased"):
    cfg = default_cfg.clone()
    cfg.MODEL.WEIGHT = weight
    cfg.MODEL.LANGUAGE_BACKBONE.MODEL_TYPE = model_type
    return cfg


@pytest.fixture
def pretrained_bert_folder(tmp_path):
    torch.manual_seed(3)
    bert = _tiny_bert()
    bert.save_pretrained(tmp_path / "bert")
    return tmp_path / "bert", bert.state_dict()


def test_resume_takes_precedence_over_model_weight():
    checkpointer = FakeCheckpointer(has_checkpoint=True)
    extra = run.load_initial_weights(_cfg(weight="does/not/exist.pth"), FakeGlip(), checkpointer,
                                     skip_optimizer=True)
    assert extra == {"iteration": 7}
    assert checkpointer.calls == [(None, True, True)]


def test_full_glip_checkpoint_is_loaded_as_is_without_pretrained_bert(tmp_path, monkeypatch):
    source = FakeGlip()
    torch.save({"model": {"module." + k: v for k, v in source.state_dict().items()}}, tmp_path / "full.pth")
    monkeypatch.setattr(run, "load_pretrained_language", lambda *a: pytest.fail("BERT must come from the file"))
    model = FakeGlip()
    assert run.load_initial_weights(_cfg(weight=str(tmp_path / "full.pth")), model, FakeCheckpointer()) == {}
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_backbone_only_file_gets_bert_from_the_pretrained_folder(tmp_path, pretrained_bert_folder):
    folder, bert_state = pretrained_bert_folder
    body = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    torch.save({"model": {"body." + k: v for k, v in body.state_dict().items()}}, tmp_path / "swin.pth")
    model = FakeGlip()
    run.load_initial_weights(_cfg(weight=str(tmp_path / "swin.pth"), model_type=str(folder)), model,
                             FakeCheckpointer())
    assert torch.equal(model.backbone.body[0].weight, body[0].weight)
    for key, value in bert_state.items():
        assert torch.equal(model.language_backbone.body.model.state_dict()[key], value), key


def test_no_weight_file_still_loads_pretrained_bert(pretrained_bert_folder):
    folder, bert_state = pretrained_bert_folder
    model = FakeGlip()
    run.load_initial_weights(_cfg(model_type=str(folder)), model, FakeCheckpointer())
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(model.language_backbone.body.model.state_dict()[key], bert_state[key])


def test_missing_pretrained_bert_is_an_error_unless_turned_off(tmp_path):
    model = FakeGlip()
    before = model.language_backbone.body.model.embeddings.word_embeddings.weight.clone()
    with pytest.raises(FileNotFoundError):
        run.load_initial_weights(_cfg(model_type=str(tmp_path / "no_such_bert")), model, FakeCheckpointer())
    run.load_initial_weights(_cfg(model_type=str(tmp_path / "no_such_bert")), model, FakeCheckpointer(),
                             pretrained_language=False)
    assert torch.equal(model.language_backbone.body.model.embeddings.word_embeddings.weight, before)


def test_restart_loader_at_skips_the_iterations_already_done():
    batches = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(range(6)), 2, drop_last=True)
    loader = torch.utils.data.DataLoader(list(range(6)), batch_sampler=IterationBasedBatchSampler(batches, 5))
    assert len(list(loader)) == 5
    run.restart_loader_at(loader, 3)
    remaining = [b.tolist() for b in loader]
    assert remaining == [[0, 1], [2, 3]]
    plain = torch.utils.data.DataLoader(list(range(6)), batch_size=2)
    with pytest.raises(TypeError):
        run.restart_loader_at(plain, 1)


def _legacy_pick(metrics):
    """The rule the monitored number was guessed by before results were typed: the first key, in sorted order,
    that starts with "Recall@1_" or is "AP" / "bbox/AP"."""
    return next(key for key in sorted(metrics) if key.startswith("Recall@1_") or key in ("AP", "bbox/AP"))


def test_eval_score_is_the_primary_metric_the_legacy_rule_picked():
    from glip.evaluation import EVALUATORS, EvalResult

    flickr_categories = ["all", "animals", "bodyparts", "clothing", "instruments", "notvisual", "other", "people",
                         "scene", "vehicles"]
    examples = {
        "coco": ["bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APm", "bbox/APl"],
        "lvis": ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR@-1", "ARs@-1", "ARm@-1",
                 "ARl@-1"],
        "flickr": ["{}_{}".format(k, c) for k in ("Recall@1", "Recall@5", "Recall@10", "Upper_bound")
                   for c in flickr_categories],
    }
    for protocol, names in examples.items():
        metrics = {name: 0.01 * (i + 1) for i, name in enumerate(names)}
        result = EvalResult(protocol, metrics, EVALUATORS[protocol].primary_metric)
        assert result.primary == _legacy_pick(metrics)
        assert run.eval_score(result) == metrics[_legacy_pick(metrics)]
    assert run.eval_score(None) == 0.0


def test_reset_bn():
    model = FakeGlip()
    bn = model.backbone.body[1]
    bn.running_mean.fill_(3.0)
    bn.running_var.fill_(5.0)
    run.reset_bn_statistics(model)
    assert torch.equal(bn.running_mean, torch.zeros(4)) and torch.equal(bn.running_var, torch.ones(4))


def test_seed_everything_repeats_all_generators():
    import random

    import numpy as np

    run.seed_everything(5)
    first = (torch.rand(2), np.random.rand(), random.random())
    run.seed_everything(5)
    second = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]


def test_pretrained_bert_lacking_weights_of_the_model_is_an_error(tmp_path):
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=0, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=20)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "shallow")  # no encoder layer 0
    with pytest.raises(ValueError, match="encoder.layer.0"):
        run.load_pretrained_language(FakeGlip(), str(tmp_path / "shallow"))
