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
-- No existing function is redefined here: the counters are kept by triggers.

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
language plpgsql as $$
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
language plpgsql as $$
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
-- generating, and (when given) at that attempt: DM409 otherwise.
create or replace function public.record_training_chunk_failures(
  p_run_id uuid, p_failed integer, p_attempt integer default null
) returns integer language plpgsql as $$
declare
  v_streak integer;
begin
  perform public.lock_training_run(p_run_id, 'generating');
  update public.training_runs
     set failed_chunk_streak = failed_chunk_streak + greatest(p_failed, 0)
   where id = p_run_id and (p_attempt is null or attempt = p_attempt)
  returning failed_chunk_streak into v_streak;
  if not found then
    raise exception 'training run % is not at attempt %', p_run_id, p_attempt
      using errcode = 'DM409', detail = 'generating';
  end if;
  return v_streak;
end
$$;

-- What a run's pairs come from, recorded once: the first plan writes it, later ones get the
-- recorded values back (the caller compares them with its own and refuses a mismatch).
create or replace function public.set_training_run_source(
  p_run_id uuid,
  p_dataset_fingerprint text,
  p_generator text,
  p_llm_model text,
  p_embedding_model text
) returns setof public.training_runs language plpgsql as $$
begin
  perform public.lock_training_run(p_run_id, 'generating');
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

revoke execute on function public.training_run_chunks_counted() from public, anon, authenticated;
revoke execute on function public.training_run_redo_rejected() from public, anon, authenticated;
revoke execute on function public.record_training_chunk_failures(uuid, integer, integer)
  from public, anon;
grant execute on function public.record_training_chunk_failures(uuid, integer, integer)
  to authenticated, service_role;
revoke execute on function public.set_training_run_source(uuid, text, text, text, text)
  from public, anon;
grant execute on function public.set_training_run_source(uuid, text, text, text, text)
  to authenticated, service_role;
