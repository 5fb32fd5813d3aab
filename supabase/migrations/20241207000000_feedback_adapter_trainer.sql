-- The trainer setting may name the feedback adapter (a linear query map averaged over seeds,
-- then one pseudo-relevance-feedback step against the corpus: bench/README.md). The check
-- constraint of 20241001000000 names every allowed trainer, so it is replaced whole, with
-- every other range unchanged.
alter table public.deep_memory_settings
  drop constraint if exists deep_memory_settings_ranges;

alter table public.deep_memory_settings
  add constraint deep_memory_settings_ranges check (
    questions_per_chunk between 1 and 10
    and batch_size between 1 and 1000
    and concurrency between 1 and 128
    and lanes between 1 and 40
    and (max_chunks_per_run is null or max_chunks_per_run >= 1)
    and trainer in ('auto', 'deep_memory', 'query_adapter', 'feedback_adapter')
  );
