"""The pure core: statuses, transitions, models, errors, and the pure rules (datasets,
executions, trainers, questions, text). No I/O here."""
