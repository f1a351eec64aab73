"""The revisions, numbered like the schema versions they produce (0005, 0006, ...)."""
