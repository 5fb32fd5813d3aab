"""Adapters: each implements a port of deepmem.ports over one outside system."""
