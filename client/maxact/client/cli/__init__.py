"""The `maxact` command line."""
