-- The lifecycle rules of DESIGN §2, in the database, so they hold for every client
-- (supabase-py through rpc(), psycopg through select) and under concurrency.
-- Errors use SQLSTATEs of our own class 'DM' so adapters map them by code, never by text:
--   DM404 run not found, DM409 status does not allow it, DM412 generation incomplete,
--   DM423 settings locked by an active run.

-- Progress and outcome columns.
alter table public.training_runs
  add column llm_calls integer not null default 0 check (llm_calls >= 0),
  add column tokens_used bigint not null default 0 check (tokens_used >= 0),
  add column metrics jsonb not null default '{}'::jsonb;

alter table public.deep_memory_settings
  add column concurrency integer not null default 16,
  add column lanes integer not null default 2,
  add column max_chunks_per_run integer,
  add column trainer text not null default 'auto';

-- The first schema let these be any integer: bring an out-of-range value into range, so the
-- constraint below applies over any data (a no-op on a database of defaults).
update public.deep_memory_settings
   set questions_per_chunk = least(greatest(questions_per_chunk, 1), 10),
       batch_size = least(greatest(batch_size, 1), 1000)
 where questions_per_chunk not between 1 and 10 or batch_size not between 1 and 1000;

alter table public.deep_memory_settings
  add constraint deep_memory_settings_ranges check (
    questions_per_chunk between 1 and 10
    and batch_size between 1 and 1000
    and concurrency between 1 and 128
    and lanes between 1 and 40
    and (max_chunks_per_run is null or max_chunks_per_run >= 1)
    and trainer in ('auto', 'deep_memory', 'query_adapter')
  );

-- At most one unfinished run per dataset, whatever the caller does. A database of the first
-- product may hold several (it never blocked a second run): then the index is left to
-- 20241201000000, which keeps every run, parks the extra ones and makes the rule global.
do $$
begin
  if not exists (select 1 from public.training_runs where status <> 'completed'
                  group by dataset having count(*) > 1) then
    create unique index training_runs_one_unfinished_per_dataset
      on public.training_runs (dataset) where status <> 'completed';
  end if;
end
$$;

-- The first schema let a pair be stored twice: keep one of each (the oldest), so the index
-- below applies; the count follows the pairs.
with twins as (
  delete from public.training_pairs p
   using public.training_pairs q
   where p.run_id = q.run_id and p.chunk_id = q.chunk_id and p.question = q.question
     and p.id > q.id
  returning p.run_id
)
update public.training_runs r set pair_count = (
  select count(*) from public.training_pairs p where p.run_id = r.id)
 where r.id in (select run_id from twins);

-- Re-writing a batch's pairs is a no-op (md5: a question may exceed a btree entry).
create unique index training_pairs_unique_question
  on public.training_pairs (run_id, chunk_id, md5(question));

-- Resume is by chunk identity: a chunk listed here is never sent to the LLM again, even
-- when it yielded no question.
create table public.training_run_chunks (
  run_id uuid not null references public.training_runs (id) on delete cascade,
  chunk_id text not null,
  question_count integer not null check (question_count >= 0),
  processed_at timestamptz not null default now(),
  primary key (run_id, chunk_id)
);

alter table public.training_run_chunks enable row level security;
create policy "admins manage processed chunks" on public.training_run_chunks
  for all to authenticated
  using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin')
  with check (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin');
revoke all on public.training_run_chunks from anon;
grant select, insert, update, delete on public.training_run_chunks to authenticated, service_role;

create or replace function public.training_run_touch() returns trigger
language plpgsql as $$
begin
  new.updated_at := now();
  return new;
end
$$;

create trigger training_runs_touch before update on public.training_runs
  for each row execute function public.training_run_touch();
create trigger deep_memory_settings_touch before update on public.deep_memory_settings
  for each row execute function public.training_run_touch();

-- DESIGN §2, the one table of allowed moves.
create or replace function public.training_run_transition_allowed(p_from text, p_to text)
returns boolean language sql immutable as $$
  select (p_from, p_to) in (
    ('generating', 'generated'), ('generating', 'generating_failed'),
    ('generated', 'training'),
    ('training', 'completed'), ('training', 'training_failed'),
    ('generating_failed', 'generating'),
    ('training_failed', 'training')
  )
$$;

create or replace function public.training_run_lock_key() returns bigint
language sql immutable as $$ select 7012436587001::bigint $$;

-- The row lock every write of a run starts with: it serialises writers of one run, so
-- counters always equal the rows they count. Returns the run's status; DM404 when unknown,
-- DM409 (status in the detail) when `p_required` is given and the run is not in it.
create or replace function public.lock_training_run(p_run_id uuid, p_required text default null)
returns text language plpgsql as $$
declare
  v_status text;
begin
  select status into v_status from public.training_runs where id = p_run_id for update;
  if not found then
    raise exception 'training run % not found', p_run_id using errcode = 'DM404';
  end if;
  if p_required is not null and v_status <> p_required then
    raise exception 'training run % is %, not %', p_run_id, v_status, p_required
      using errcode = 'DM409', detail = v_status;
  end if;
  return v_status;
end
$$;

create or replace function public.create_training_run(
  p_dataset text, p_user_id uuid default null, p_run_id uuid default null
) returns jsonb language plpgsql as $$
declare
  v_run public.training_runs;
begin
  -- Serialise creators: the check below and the insert must see the same world.
  perform pg_advisory_xact_lock(public.training_run_lock_key());
  select * into v_run from public.training_runs
   where status <> 'completed' order by created_at limit 1;
  if found then
    return jsonb_build_object('created', false, 'blocking_run', to_jsonb(v_run));
  end if;
  insert into public.training_runs (id, dataset, status, user_id)
  values (coalesce(p_run_id, gen_random_uuid()), p_dataset, 'generating', p_user_id)
  returning * into v_run;
  return jsonb_build_object('created', true, 'run', to_jsonb(v_run));
end
$$;

create or replace function public.get_training_run(p_run_id uuid)
returns setof public.training_runs language sql stable as $$
  select * from public.training_runs where id = p_run_id
$$;

create or replace function public.list_training_runs(p_limit integer default 50, p_offset integer default 0)
returns setof public.training_runs language sql stable as $$
  select * from public.training_runs
   order by created_at desc, id desc
   limit least(greatest(p_limit, 0), 1000) offset greatest(p_offset, 0)
$$;

create or replace function public.blocking_training_run()
returns setof public.training_runs language sql stable as $$
  select * from public.training_runs where status <> 'completed'
   order by created_at limit 1
$$;

create or replace function public.transition_training_run(
  p_run_id uuid,
  p_expected text[],
  p_target text,
  p_error_message text default null,
  p_next_attempt boolean default false,
  p_attempt integer default null
) returns setof public.training_runs language plpgsql as $$
declare
  v_current text;
  v_bad text;
begin
  select status into v_current from public.training_runs where id = p_run_id;
  if not found then
    raise exception 'training run % not found', p_run_id using errcode = 'DM404';
  end if;
  select e into v_bad from unnest(p_expected) e
   where not public.training_run_transition_allowed(e, p_target) limit 1;
  if v_bad is not null then
    raise exception 'training run % cannot move from % to %', p_run_id, v_bad, p_target
      using errcode = 'DM409', detail = v_current;
  end if;
  if p_target = 'generated' and exists (
    select 1 from public.training_runs
     where id = p_run_id and status = any(p_expected) and processed_chunks < total_chunks
  ) then
    raise exception 'training run % has unprocessed chunks', p_run_id using errcode = 'DM412';
  end if;
  return query
    update public.training_runs
       set status = p_target,
           error_message = case when p_target in ('generating', 'training') then null
                                else coalesce(p_error_message, error_message) end,
           attempt = attempt + case when p_next_attempt then 1 else 0 end
     where id = p_run_id and status = any(p_expected)
       -- On the attempt too: an old execution's failure never fails a newer attempt.
       and (p_attempt is null or attempt = p_attempt)
    returning *;
end
$$;

create or replace function public.set_training_run_total(p_run_id uuid, p_total_chunks integer)
returns setof public.training_runs language plpgsql as $$
begin
  perform public.lock_training_run(p_run_id, 'generating');
  return query update public.training_runs set total_chunks = p_total_chunks
                where id = p_run_id returning *;
end
$$;

create or replace function public.set_training_run_job(p_run_id uuid, p_job_id text)
returns setof public.training_runs language plpgsql as $$
begin
  perform public.lock_training_run(p_run_id, 'training');
  return query update public.training_runs set deeplake_job_id = p_job_id
                where id = p_run_id returning *;
end
$$;

create or replace function public.set_training_run_metrics(p_run_id uuid, p_metrics jsonb)
returns setof public.training_runs language plpgsql as $$
begin
  if not exists (select 1 from public.training_runs where id = p_run_id) then
    raise exception 'training run % not found', p_run_id using errcode = 'DM404';
  end if;
  return query update public.training_runs set metrics = coalesce(p_metrics, '{}'::jsonb)
                where id = p_run_id returning *;
end
$$;

-- One batch: processed chunk ids, their pairs and the counters, in one transaction.
-- A chunk already processed is ignored whole, so a retried batch changes nothing.
create or replace function public.record_training_batch(
  p_run_id uuid, p_chunks jsonb, p_llm_calls integer default 0, p_tokens_used bigint default 0
) returns jsonb language plpgsql as $$
declare
  v_new_chunks integer;
  v_new_pairs integer;
  v_run public.training_runs;
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

  update public.training_runs
     set processed_chunks = processed_chunks + v_new_chunks,
         pair_count = pair_count + v_new_pairs,
         llm_calls = llm_calls + case when v_new_chunks > 0 then greatest(p_llm_calls, 0) else 0 end,
         tokens_used = tokens_used + case when v_new_chunks > 0 then greatest(p_tokens_used, 0) else 0 end
   where id = p_run_id
  returning * into v_run;

  return jsonb_build_object('new_chunks', v_new_chunks, 'new_pairs', v_new_pairs,
                            'run', to_jsonb(v_run));
end
$$;

create or replace function public.processed_training_chunks(p_run_id uuid, p_chunk_ids text[])
returns setof text language sql stable as $$
  select chunk_id from public.training_run_chunks
   where run_id = p_run_id and chunk_id = any(p_chunk_ids)
$$;

create or replace function public.list_training_pairs(
  p_run_id uuid, p_limit integer default 100, p_offset integer default 0
) returns setof public.training_pairs language sql stable as $$
  select * from public.training_pairs where run_id = p_run_id
   order by id limit least(greatest(p_limit, 0), 10000) offset greatest(p_offset, 0)
$$;

create or replace function public.delete_training_run(p_run_id uuid)
returns jsonb language plpgsql as $$
declare
  v_status text;
  v_pairs integer;
begin
  v_status := public.lock_training_run(p_run_id);
  if v_status not in ('generating_failed', 'training_failed', 'generated') then
    raise exception 'training run % is %: only failed or generated runs can be deleted',
      p_run_id, v_status using errcode = 'DM409', detail = v_status;
  end if;
  select count(*) into v_pairs from public.training_pairs where run_id = p_run_id;
  delete from public.training_runs where id = p_run_id;
  return jsonb_build_object('training_run_id', p_run_id, 'deleted_pairs', v_pairs);
end
$$;

create or replace function public.get_deep_memory_settings()
returns setof public.deep_memory_settings language sql stable as $$
  select * from public.deep_memory_settings where id = 1
$$;

create or replace function public.update_deep_memory_settings(p_settings jsonb)
returns setof public.deep_memory_settings language plpgsql as $$
declare
  v_active public.training_runs;
begin
  perform pg_advisory_xact_lock(public.training_run_lock_key());
  select * into v_active from public.training_runs
   where status in ('generating', 'training') order by created_at limit 1;
  if found then
    raise exception 'settings cannot change while training run % is %', v_active.id, v_active.status
      using errcode = 'DM423', detail = v_active.status, hint = v_active.id::text;
  end if;
  return query
    update public.deep_memory_settings s
       set questions_per_chunk = coalesce((p_settings ->> 'questions_per_chunk')::integer, s.questions_per_chunk),
           llm_model = coalesce(p_settings ->> 'llm_model', s.llm_model),
           embedding_model = coalesce(p_settings ->> 'embedding_model', s.embedding_model),
           batch_size = coalesce((p_settings ->> 'batch_size')::integer, s.batch_size),
           concurrency = coalesce((p_settings ->> 'concurrency')::integer, s.concurrency),
           lanes = coalesce((p_settings ->> 'lanes')::integer, s.lanes),
           max_chunks_per_run = case when p_settings ? 'max_chunks_per_run'
                                     then (p_settings ->> 'max_chunks_per_run')::integer
                                     else s.max_chunks_per_run end,
           trainer = coalesce(p_settings ->> 'trainer', s.trainer)
     where id = 1
    returning *;
end
$$;

revoke execute on all functions in schema public from public, anon;
grant execute on all functions in schema public to authenticated, service_role;
