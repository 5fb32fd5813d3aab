-- A lane's one round trip per batch: the write of the answers so far and the question
-- "which of the next batch's chunks were already processed?" in one call, so resume by
-- chunk identity costs no round trip of its own.
-- The answer to the look-up is read after the write, in the same transaction, under the
-- run's row lock: it is exact when it is returned.

drop function if exists public.record_training_batch(uuid, jsonb, integer, bigint);

create or replace function public.record_training_batch(
  p_run_id uuid,
  p_chunks jsonb,
  p_llm_calls integer default 0,
  p_tokens_used bigint default 0,
  p_look_up text[] default null
) returns jsonb language plpgsql as $$
declare
  v_new_chunks integer;
  v_new_pairs integer;
  v_run public.training_runs;
  v_processed jsonb;
begin
  perform public.lock_training_run(p_run_id, 'generating');

  with input as (
    select c.value ->> 'chunk_id' as chunk_id,
           coalesce(c.value -> 'questions', '[]'::jsonb) as questions,
           c.ordinality as position
      from jsonb_array_elements(coalesce(p_chunks, '[]'::jsonb)) with ordinality c
  ),
  first_seen as (
    select distinct on (chunk_id) chunk_id, questions, position
      from input where chunk_id is not null order by chunk_id, position
  ),
  new_chunks as (
    insert into public.training_run_chunks (run_id, chunk_id, question_count)
    select p_run_id, chunk_id, jsonb_array_length(questions) from first_seen
    on conflict do nothing
    returning chunk_id
  ),
  new_pairs as (
    insert into public.training_pairs (run_id, chunk_id, question)
    select p_run_id, f.chunk_id, q.value
      from first_seen f
      join new_chunks n on n.chunk_id = f.chunk_id
      cross join lateral jsonb_array_elements_text(f.questions) with ordinality q(value, ord)
     order by f.position, q.ord
    on conflict do nothing
    returning 1
  )
  select (select count(*) from new_chunks), (select count(*) from new_pairs)
    into v_new_chunks, v_new_pairs;

  if v_new_chunks > 0 then
    update public.training_runs
       set processed_chunks = processed_chunks + v_new_chunks,
           pair_count = pair_count + v_new_pairs,
           llm_calls = llm_calls + greatest(p_llm_calls, 0),
           tokens_used = tokens_used + greatest(p_tokens_used, 0)
     where id = p_run_id
    returning * into v_run;
  else
    -- Nothing new (a look-up alone, or a retried batch): no row version, no realtime event.
    select * into v_run from public.training_runs where id = p_run_id;
  end if;

  select coalesce(jsonb_agg(chunk_id), '[]'::jsonb) into v_processed
    from public.training_run_chunks
   where run_id = p_run_id and chunk_id = any(coalesce(p_look_up, '{}'::text[]));

  return jsonb_build_object('new_chunks', v_new_chunks, 'new_pairs', v_new_pairs,
                            'run', to_jsonb(v_run), 'processed', v_processed);
end
$$;

revoke execute on function public.record_training_batch(uuid, jsonb, integer, bigint, text[])
  from public, anon;
grant execute on function public.record_training_batch(uuid, jsonb, integer, bigint, text[])
  to authenticated, service_role;
