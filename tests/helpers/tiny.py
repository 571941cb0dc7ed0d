"""Shrinking GLIP for fast tests."""
import importlib
import sys

# Modules that bind `load_bert_config` by name at import: each is imported first, then patched as well, so the
# patch neither misses them nor outlives the test in a module first imported while it was active.
_BINDERS = ("glip.modeling.language", "glip.modeling.language.bert", "glip.modeling.head.bert_layer")


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

    for name in _BINDERS:
        importlib.import_module(name)
    for name, module in list(sys.modules.items()):
        if name.startswith("glip.") and getattr(module, "load_bert_config", None) is original:
            monkeypatch.setattr(module, "load_bert_config", small_config)


class _ProcessPatch:
    """The `setattr` half of pytest's monkeypatch, for worker processes that keep the patch until they exit."""

    @staticmethod
    def setattr(target, name, value):
        setattr(target, name, value)


def tiny_bert_for_process():
    """`tiny_bert` for a whole (worker) process."""
    tiny_bert(_ProcessPatch())
