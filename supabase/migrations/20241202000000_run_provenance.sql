-- No poisoned or silent runs (issue 15, items 3 and 8):
-- * rejected_chunks: chunks whose answer held no usable question. They are recorded (the lane
--   moves on, the run is not failed) and counted; a proceed forgets them, so the next attempt
--   asks the LLM about them again (resume by chunk identity still skips every chunk that gave
--   a pair).
-- * failed_chunk_streak: chunks whose LLM calls failed (after the adapter's own retries) since
--   the last chunk answered; the lane stops the run once it reaches the retry budget, so an
--   outage costs a bounded number of calls.
-- * what the pairs came from: the dataset's fingerprint (its chunk ids and version), the
--   generator and its model, the embedding model of the dataset. Recorded by the first plan
--   of a run and never changed, so a resume over another dataset or generator is refused.
-- No existing function is redefined here: the counters are kept by triggers. The two writers
-- below follow the rules migration (20241201000000): security definer bodies in
-- `deepmem_private` behind invoker doors, the admin check, and the worker's attempt
-- (`lock_worker_run`: DM410 for a worker of another attempt or phase).

alter table public.training_runs
  add column if not exists rejected_chunks integer not null default 0
    check (rejected_chunks >= 0),
  add column if not exists failed_chunk_streak integer not null default 0
    check (failed_chunk_streak >= 0),
  add column if not exists dataset_fingerprint text,
  add column if not exists generator text,
  add column if not exists llm_model text,
  add column if not exists embedding_model text;

-- Counted where the chunks are written, once per statement: a batch that records a rejected
-- chunk adds it; any recorded answer ends a streak of failed chunks.
create or replace function public.training_run_chunks_counted() returns trigger
language plpgsql set search_path = '' as $$
begin
  update public.training_runs r
     set rejected_chunks = r.rejected_chunks + c.rejected,
         failed_chunk_streak = 0
    from (select run_id, count(*) filter (where question_count = 0)::integer as rejected
            from inserted group by run_id) c
   where r.id = c.run_id and (c.rejected > 0 or r.failed_chunk_streak > 0);
  return null;
end
$$;

drop trigger if exists training_run_chunks_counted on public.training_run_chunks;
create trigger training_run_chunks_counted after insert on public.training_run_chunks
  referencing new table as inserted
  for each statement execute function public.training_run_chunks_counted();

-- A proceed of a failed generation redoes the rejected chunks and starts a fresh budget.
create or replace function public.training_run_redo_rejected() returns trigger
language plpgsql set search_path = '' as $$
declare
  v_redo integer;
begin
  if old.status = 'generating_failed' and new.status = 'generating' then
    delete from public.training_run_chunks where run_id = new.id and question_count = 0;
    get diagnostics v_redo = row_count;
    new.processed_chunks := greatest(new.processed_chunks - v_redo, 0);
    new.rejected_chunks := 0;
    new.failed_chunk_streak := 0;
  end if;
  return new;
end
$$;

drop trigger if exists training_runs_redo_rejected on public.training_runs;
create trigger training_runs_redo_rejected before update of status on public.training_runs
  for each row execute function public.training_run_redo_rejected();

-- A lane's failed chunks, added to the streak; returns the streak. Only while the run is
-- generating at the worker's attempt (DM410 otherwise).
create or replace function deepmem_private.record_training_chunk_failures(
  p_run_id uuid, p_failed integer, p_attempt integer
) returns integer language plpgsql security definer set search_path = '' as $$
declare
  v_streak integer;
begin
  perform deepmem_private.require_admin();
  perform deepmem_private.lock_worker_run(p_run_id, p_attempt, array['generating']);
  update public.training_runs
     set failed_chunk_streak = failed_chunk_streak + greatest(p_failed, 0)
   where id = p_run_id
  returning failed_chunk_streak into v_streak;
  return v_streak;
end
$$;

create or replace function public.record_training_chunk_failures(
  p_run_id uuid, p_failed integer, p_attempt integer
) returns integer language sql set search_path = '' as $$
  select deepmem_private.record_training_chunk_failures(p_run_id, p_failed, p_attempt)
$$;

-- What a run's pairs come from, recorded once: the first plan writes it, later ones get the
-- recorded values back (the caller compares them with its own and refuses a mismatch).
create or replace function deepmem_private.set_training_run_source(
  p_run_id uuid,
  p_dataset_fingerprint text,
  p_generator text,
  p_llm_model text,
  p_embedding_model text,
  p_attempt integer
) returns setof public.training_runs
language plpgsql security definer set search_path = '' as $$
begin
  perform deepmem_private.require_admin();
  perform deepmem_private.lock_worker_run(p_run_id, p_attempt, array['generating']);
  return query
    update public.training_runs
       set dataset_fingerprint = coalesce(dataset_fingerprint, p_dataset_fingerprint),
           generator = coalesce(generator, p_generator),
           llm_model = case when generator is null then p_llm_model else llm_model end,
           embedding_model = coalesce(embedding_model, p_embedding_model)
     where id = p_run_id
    returning *;
end
$$;

create or replace function public.set_training_run_source(
  p_run_id uuid,
  p_dataset_fingerprint text,
  p_generator text,
  p_llm_model text,
  p_embedding_model text,
  p_attempt integer
) returns setof public.training_runs language sql set search_path = '' as $$
  select * from deepmem_private.set_training_run_source(
    p_run_id, p_dataset_fingerprint, p_generator, p_llm_model, p_embedding_model, p_attempt)
$$;

revoke execute on function
  public.training_run_chunks_counted(), public.training_run_redo_rejected(),
  public.record_training_chunk_failures(uuid, integer, integer),
  deepmem_private.record_training_chunk_failures(uuid, integer, integer),
  public.set_training_run_source(uuid, text, text, text, text, integer),
  deepmem_private.set_training_run_source(uuid, text, text, text, text, integer)
  from public, anon, authenticated;
grant execute on function
  public.record_training_chunk_failures(uuid, integer, integer),
  deepmem_private.record_training_chunk_failures(uuid, integer, integer),
  public.set_training_run_source(uuid, text, text, text, text, integer),
  deepmem_private.set_training_run_source(uuid, text, text, text, text, integer)
  to authenticated, service_role;
