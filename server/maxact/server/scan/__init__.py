"""The scan engine: one pass over a dataset answers every channel of every requested layer.

Modules: `engine` (sessions, pipelined inference and reduction), `layer` (per-layer reducer),
`stats` (per-channel statistics), `suppress` (position mode), `exact` (exact mergeable sums),
`batching` (batch-1 models made batchable), `decode` (draft-mode JPEG decoding).
"""
