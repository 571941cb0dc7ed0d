"""Placeholder (filled below)."""


class RefusedOptionError(ValueError):
    pass


def check_config(cfg, training=False):
    return None
