"""`maxact report`: the static HTML gallery of a finished scan."""
