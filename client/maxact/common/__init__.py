"""The vocabulary client and server share: kinds, render modes, layouts, defaults,
preprocessing, resource names and the records both read (class answers, statistics).

It ships in the light distribution (`pip install maxact`) and imports nothing of
`maxact.client` or `maxact.server`: the server imports its vocabulary from here, never from
the client package.
"""
