"""modeling/language."""
