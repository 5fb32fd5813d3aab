"""The cloud's code on one machine: the deployed ASL on moto's interpreter with the Lambda
handlers loaded in process, the embedded PostgreSQL and its migrations, the dataset builder and
the standard-library corpus, the local API server, Lambda contexts and events.

Used by the CLI, the demo, `bench/` and the tests; never shipped in a Lambda layer (the common
layer's Makefile leaves it out, and a test checks that no function imports it).
"""
