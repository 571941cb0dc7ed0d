"""Shrinking GLIP for fast tests."""


def tiny_bert(monkeypatch):
    """Make every BERT built while the patch is active 1 layer deep with a 128-wide feed-forward.

    The hidden size stays 768 (the head's language width), so the rest of the model is unchanged.
    """
    from glip.modeling.language import bert

    original = bert.load_bert_config

    def small_config(*args, **kwargs):
        config = original(*args, **kwargs)
        config.num_hidden_layers = 1
        config.intermediate_size = 128
        return config

    monkeypatch.setattr(bert, "load_bert_config", small_config)
