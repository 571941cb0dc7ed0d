"""modeling/head."""
