"""Use cases: runs (start, train, proceed, cancel, delete, settings), generation (plan, batch,
finish), training (submit, check), failures (record a phase's failure)."""
