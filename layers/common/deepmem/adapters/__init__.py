"""Driven adapters, grouped by the port of `deepmem.ports` they implement (the way Powertools
groups its parameter providers): `store/` (RunStore), `dataset/` (ChunkSource, plus the corpus
that search and evaluation read), `generators/` (QuestionGenerator), `embedders/` (Embedder),
`trainers/` (Trainer), `workflow/` (Workflow), and `secrets.py` for the secrets they need.

Everything here may run in AWS. Code that only runs the cloud's parts on one machine lives in
`deepmem.local`, which never ships in a Lambda layer.
"""
