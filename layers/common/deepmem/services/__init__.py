"""Use cases: start, proceed, delete, settings, generate batch, train."""
