"""Trainer adapters: Deep Memory on `hub://` datasets (`deep_memory.py`), and the query adapter
(`query_adapter.py`) with its numpy maths (`adapter_maths.py`, no I/O) and the storage of its
matrices (`artifacts.py`).
"""
