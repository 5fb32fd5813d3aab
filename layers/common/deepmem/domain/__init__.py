"""The pure core: statuses, transitions, models and errors. No I/O here."""
