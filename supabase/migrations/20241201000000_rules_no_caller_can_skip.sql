-- Rules no caller can skip (issue 15, items 2, 4 and 7).
--
-- 1. Upgrade over any data: runs of the first product (several unfinished runs, of one dataset
--    or of several) are kept; all but the newest unfinished one are *parked*: moved to their
--    phase's failed status (a `generated` one stays `generated`) with a message saying why,
--    and `parked_at` set. A parked run can be deleted at any time and moved on (proceed, train)
--    only once it is the only unfinished run (DM419 otherwise). Pairs of runs that predate
--    `training_run_chunks` mark their chunks processed, so resume never pays for them twice.
-- 2. One unfinished run at a time, for any insert or update: a global partial unique index
--    (parked runs aside), and `parked_at` can only ever be cleared, never set.
-- 3. Only the SQL functions write: `anon` and `authenticated` keep no INSERT/UPDATE/DELETE/
--    TRUNCATE on any table (admins keep SELECT, for the dashboard and Realtime). Every write is
--    a `security definer` function in the unexposed schema `deepmem_private` (search_path
--    empty, names qualified, an admin check from `auth.jwt()` when the caller is signed in),
--    reached through a `security invoker` function of the same name and arguments in `public`
--    (what PostgREST exposes). Internal helpers are executable by no signed-in user.
-- 4. Stale workers: every write a worker makes carries its attempt. DM410 refuses it when the
--    run is no longer at that attempt, or no longer in that phase. A batch of the run's attempt
--    after the run failed in generation (a cancel, another lane's failure) is still recorded,
--    so answers already paid for are kept, and answers `stop: true`: the worker starts nothing
--    more.
--
-- SQLSTATEs added to class DM: DM410 stale worker (detail: the run's status, hint: its
-- attempt), DM419 blocked by another unfinished run (detail: its status, hint: its id).

-- ---------------------------------------------------------------------------------------
-- 1. Data of earlier products
-- ---------------------------------------------------------------------------------------

-- The first schema let the settings row be deleted, and model names be anything.
insert into public.deep_memory_settings (id) values (1) on conflict (id) do nothing;
update public.deep_memory_settings
   set llm_model = case when llm_model ~ '^\S{1,200}$' then llm_model else 'gpt-4o-mini' end,
       embedding_model = case when embedding_model ~ '^\S{1,200}$' then embedding_model
                              else 'text-embedding-3-small' end
 where llm_model !~ '^\S{1,200}$' or embedding_model !~ '^\S{1,200}$';

-- Runs whose pairs predate the processed-chunks table: their chunks with a pair are processed
-- (a chunk that yielded nothing is unknown and is generated again). Progress then counts rows.
create temporary table legacy_runs on commit drop as
  select r.id, r.status from public.training_runs r
   where not exists (select 1 from public.training_run_chunks c where c.run_id = r.id)
     and exists (select 1 from public.training_pairs p where p.run_id = r.id);

insert into public.training_run_chunks (run_id, chunk_id, question_count)
select p.run_id, p.chunk_id, count(*)
  from public.training_pairs p join legacy_runs l on l.id = p.run_id
 group by p.run_id, p.chunk_id
on conflict do nothing;

update public.training_runs r
   set pair_count = (select count(*) from public.training_pairs p where p.run_id = r.id),
       processed_chunks = case
         when l.status in ('generating', 'generating_failed')
           then (select count(*) from public.training_run_chunks c where c.run_id = r.id)
         else r.processed_chunks end
  from legacy_runs l
 where l.id = r.id;

-- Park all but the newest unfinished run.
alter table public.training_runs add column parked_at timestamptz;

with unfinished as (
  select id, row_number() over (order by created_at desc, id desc) as rank,
         count(*) over () as total
    from public.training_runs where status <> 'completed'
)
update public.training_runs r
   set parked_at = now(),
       status = case r.status when 'generating' then 'generating_failed'
                              when 'training' then 'training_failed'
                              else r.status end,
       error_message = format(
         'parked by the upgrade: %s runs were unfinished and only one may be. Delete this run '
         '(DELETE /runs/%s or `deepmem delete %s`), or proceed it once it is the only '
         'unfinished run.', u.total, r.id, r.id)
         || coalesce(' Its error before: ' || r.error_message, '')
  from unfinished u
 where u.id = r.id and u.rank > 1;

-- ---------------------------------------------------------------------------------------
-- 2. One unfinished run at a time
-- ---------------------------------------------------------------------------------------

drop index if exists public.training_runs_one_unfinished_per_dataset;
create unique index training_runs_one_unfinished
  on public.training_runs ((true)) where status <> 'completed' and parked_at is null;

create or replace function public.training_run_guard_parked() returns trigger
language plpgsql set search_path = '' as $$
begin
  if new.parked_at is not null and (tg_op = 'INSERT' or old.parked_at is null) then
    raise exception 'only the upgrade parks a run' using errcode = '42501';
  end if;
  return new;
end
$$;

create trigger training_runs_guard_parked before insert or update on public.training_runs
  for each row execute function public.training_run_guard_parked();

-- ---------------------------------------------------------------------------------------
-- 3. Only the functions write
-- ---------------------------------------------------------------------------------------

revoke insert, update, delete, truncate, references, trigger
  on public.training_runs, public.training_pairs, public.deep_memory_settings,
     public.training_run_chunks
  from anon, authenticated;
revoke all on public.training_runs, public.training_pairs, public.deep_memory_settings,
  public.training_run_chunks from anon;
revoke all on all sequences in schema public from anon, authenticated;
grant select
  on public.training_runs, public.training_pairs, public.deep_memory_settings,
     public.training_run_chunks
  to authenticated;
-- Tables later migrations create get no write grant by default (Supabase grants all).
alter default privileges in schema public
  revoke insert, update, delete, truncate on tables from anon, authenticated;

drop policy "admins manage training runs" on public.training_runs;
drop policy "admins manage training pairs" on public.training_pairs;
drop policy "admins manage settings" on public.deep_memory_settings;
drop policy "admins manage processed chunks" on public.training_run_chunks;
create policy "admins read training runs" on public.training_runs
  for select to authenticated
  using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin');
create policy "admins read training pairs" on public.training_pairs
  for select to authenticated
  using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin');
create policy "admins read settings" on public.deep_memory_settings
  for select to authenticated
  using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin');
create policy "admins read processed chunks" on public.training_run_chunks
  for select to authenticated
  using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin');

create schema if not exists deepmem_private;
revoke all on schema deepmem_private from public;
grant usage on schema deepmem_private to authenticated, service_role;

-- The internal helpers, now with a fixed search_path.
create or replace function public.training_run_touch() returns trigger
language plpgsql set search_path = '' as $$
begin
  new.updated_at := now();
  return new;
end
$$;

create or replace function public.training_run_transition_allowed(p_from text, p_to text)
returns boolean language sql immutable set search_path = '' as $$
  select (p_from, p_to) in (
    ('generating', 'generated'), ('generating', 'generating_failed'),
    ('generated', 'training'),
    ('training', 'completed'), ('training', 'training_failed'),
    ('generating_failed', 'generating'),
    ('training_failed', 'training')
  )
$$;

create or replace function public.training_run_lock_key() returns bigint
language sql immutable set search_path = '' as $$ select 7012436587001::bigint $$;

create or replace function public.lock_training_run(p_run_id uuid, p_required text default null)
returns text language plpgsql set search_path = '' as $$
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

-- A signed-in caller (PostgREST's `authenticated`, or a JWT saying so) must be an admin; the
-- service role and the database's own roles (psycopg) pass.
create or replace function deepmem_private.require_admin() returns void
language plpgsql stable set search_path = '' as $$
declare
  v_claims jsonb := auth.jwt();
begin
  if (current_setting('role') in ('anon', 'authenticated')
      or coalesce(v_claims ->> 'role', '') in ('anon', 'authenticated'))
     and coalesce(v_claims -> 'app_metadata' ->> 'role', '') <> 'admin' then
    raise exception 'only an admin may change training runs or settings'
      using errcode = '42501';
  end if;
end
$$;

-- The row lock a worker's write starts with: DM404 when unknown, DM410 when the run is no
-- longer at the worker's attempt or in one of `p_statuses` (its phase).
create or replace function deepmem_private.lock_worker_run(
  p_run_id uuid, p_attempt integer, p_statuses text[]
) returns public.training_runs language plpgsql set search_path = '' as $$
declare
  v_run public.training_runs;
begin
  select * into v_run from public.training_runs where id = p_run_id for update;
  if not found then
    raise exception 'training run % not found', p_run_id using errcode = 'DM404';
  end if;
  if p_attempt is null or v_run.attempt <> p_attempt or v_run.status <> all(p_statuses) then
    raise exception 'training run % is % at attempt %: a worker of attempt % must stop',
      p_run_id, v_run.status, v_run.attempt, coalesce(p_attempt::text, '(none)')
      using errcode = 'DM410', detail = v_run.status, hint = v_run.attempt::text;
  end if;
  return v_run;
end
$$;

-- ---------------------------------------------------------------------------------------
-- The writers (security definer, private) and their public doors (security invoker)
-- ---------------------------------------------------------------------------------------

create or replace function deepmem_private.create_training_run(
  p_dataset text, p_user_id uuid, p_run_id uuid
) returns jsonb language plpgsql security definer set search_path = '' as $$
declare
  v_run public.training_runs;
begin
  perform deepmem_private.require_admin();
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

create or replace function public.create_training_run(
  p_dataset text, p_user_id uuid default null, p_run_id uuid default null
) returns jsonb language sql set search_path = '' as $$
  select deepmem_private.create_training_run(p_dataset, p_user_id, p_run_id)
$$;

create or replace function deepmem_private.transition_training_run(
  p_run_id uuid, p_expected text[], p_target text, p_error_message text,
  p_next_attempt boolean, p_attempt integer
) returns setof public.training_runs
language plpgsql security definer set search_path = '' as $$
declare
  v_run public.training_runs;
  v_bad text;
  v_blocking public.training_runs;
begin
  perform deepmem_private.require_admin();
  select * into v_run from public.training_runs where id = p_run_id;
  if not found then
    raise exception 'training run % not found', p_run_id using errcode = 'DM404';
  end if;
  select e into v_bad from unnest(p_expected) e
   where not public.training_run_transition_allowed(e, p_target) limit 1;
  if v_bad is not null then
    raise exception 'training run % cannot move from % to %', p_run_id, v_bad, p_target
      using errcode = 'DM409', detail = v_run.status;
  end if;
  if v_run.parked_at is not null and v_run.status = any(p_expected) then
    -- A parked run moves on only as the one unfinished run.
    perform pg_advisory_xact_lock(public.training_run_lock_key());
    select * into v_blocking from public.training_runs
     where id <> p_run_id and status <> 'completed' order by created_at limit 1;
    if found then
      raise exception 'training run % is parked: training run % (%) is unfinished too; delete '
        'one of them first', p_run_id, v_blocking.id, v_blocking.status
        using errcode = 'DM419', detail = v_blocking.status, hint = v_blocking.id::text;
    end if;
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
           attempt = attempt + case when p_next_attempt then 1 else 0 end,
           parked_at = null
     where id = p_run_id and status = any(p_expected)
       and (p_attempt is null or attempt = p_attempt)
    returning *;
end
$$;

create or replace function public.transition_training_run(
  p_run_id uuid,
  p_expected text[],
  p_target text,
  p_error_message text default null,
  p_next_attempt boolean default false,
  p_attempt integer default null
) returns setof public.training_runs language sql set search_path = '' as $$
  select * from deepmem_private.transition_training_run(
    p_run_id, p_expected, p_target, p_error_message, p_next_attempt, p_attempt)
$$;

drop function public.set_training_run_total(uuid, integer);
drop function public.set_training_run_job(uuid, text);
drop function public.set_training_run_metrics(uuid, jsonb);
drop function public.record_training_batch(uuid, jsonb, integer, bigint, text[]);

create or replace function deepmem_private.set_training_run_total(
  p_run_id uuid, p_total_chunks integer, p_attempt integer
) returns setof public.training_runs
language plpgsql security definer set search_path = '' as $$
begin
  perform deepmem_private.require_admin();
  perform deepmem_private.lock_worker_run(p_run_id, p_attempt, array['generating']);
  return query update public.training_runs set total_chunks = p_total_chunks
                where id = p_run_id returning *;
end
$$;

create or replace function public.set_training_run_total(
  p_run_id uuid, p_total_chunks integer, p_attempt integer
) returns setof public.training_runs language sql set search_path = '' as $$
  select * from deepmem_private.set_training_run_total(p_run_id, p_total_chunks, p_attempt)
$$;

create or replace function deepmem_private.set_training_run_job(
  p_run_id uuid, p_job_id text, p_attempt integer
) returns setof public.training_runs
language plpgsql security definer set search_path = '' as $$
begin
  perform deepmem_private.require_admin();
  perform deepmem_private.lock_worker_run(p_run_id, p_attempt, array['training']);
  return query update public.training_runs set deeplake_job_id = p_job_id
                where id = p_run_id returning *;
end
$$;

create or replace function public.set_training_run_job(
  p_run_id uuid, p_job_id text, p_attempt integer
) returns setof public.training_runs language sql set search_path = '' as $$
  select * from deepmem_private.set_training_run_job(p_run_id, p_job_id, p_attempt)
$$;

create or replace function deepmem_private.set_training_run_metrics(
  p_run_id uuid, p_metrics jsonb, p_attempt integer
) returns setof public.training_runs
language plpgsql security definer set search_path = '' as $$
begin
  perform deepmem_private.require_admin();
  perform deepmem_private.lock_worker_run(p_run_id, p_attempt, array['training']);
  return query update public.training_runs set metrics = coalesce(p_metrics, '{}'::jsonb)
                where id = p_run_id returning *;
end
$$;

create or replace function public.set_training_run_metrics(
  p_run_id uuid, p_metrics jsonb, p_attempt integer
) returns setof public.training_runs language sql set search_path = '' as $$
  select * from deepmem_private.set_training_run_metrics(p_run_id, p_metrics, p_attempt)
$$;

-- One batch of a lane (see 20241105000000_batch_look_up.sql), refused to a stale worker; after
-- a failure of the same attempt (a cancel) it is still recorded and answers `stop: true`.
create or replace function deepmem_private.record_training_batch(
  p_run_id uuid, p_attempt integer, p_chunks jsonb, p_llm_calls integer,
  p_tokens_used bigint, p_look_up text[]
) returns jsonb language plpgsql security definer set search_path = '' as $$
declare
  v_new_chunks integer;
  v_new_pairs integer;
  v_run public.training_runs;
  v_processed jsonb;
begin
  perform deepmem_private.require_admin();
  v_run := deepmem_private.lock_worker_run(
    p_run_id, p_attempt, array['generating', 'generating_failed']);

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
  end if;

  select coalesce(jsonb_agg(chunk_id), '[]'::jsonb) into v_processed
    from public.training_run_chunks
   where run_id = p_run_id and chunk_id = any(coalesce(p_look_up, '{}'::text[]));

  return jsonb_build_object('new_chunks', v_new_chunks, 'new_pairs', v_new_pairs,
                            'run', to_jsonb(v_run), 'processed', v_processed,
                            'stop', v_run.status <> 'generating');
end
$$;

create or replace function public.record_training_batch(
  p_run_id uuid,
  p_attempt integer,
  p_chunks jsonb,
  p_llm_calls integer default 0,
  p_tokens_used bigint default 0,
  p_look_up text[] default null
) returns jsonb language sql set search_path = '' as $$
  select deepmem_private.record_training_batch(
    p_run_id, p_attempt, p_chunks, p_llm_calls, p_tokens_used, p_look_up)
$$;

create or replace function deepmem_private.delete_training_run(p_run_id uuid)
returns jsonb language plpgsql security definer set search_path = '' as $$
declare
  v_status text;
  v_pairs integer;
begin
  perform deepmem_private.require_admin();
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

create or replace function public.delete_training_run(p_run_id uuid)
returns jsonb language sql set search_path = '' as $$
  select deepmem_private.delete_training_run(p_run_id)
$$;

create or replace function deepmem_private.update_deep_memory_settings(p_settings jsonb)
returns setof public.deep_memory_settings
language plpgsql security definer set search_path = '' as $$
declare
  v_active public.training_runs;
begin
  perform deepmem_private.require_admin();
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

create or replace function public.update_deep_memory_settings(p_settings jsonb)
returns setof public.deep_memory_settings language sql set search_path = '' as $$
  select * from deepmem_private.update_deep_memory_settings(p_settings)
$$;

-- The readers stay security invoker: row-level security shows admins every row, others none.
create or replace function public.get_training_run(p_run_id uuid)
returns setof public.training_runs language sql stable set search_path = '' as $$
  select * from public.training_runs where id = p_run_id
$$;

create or replace function public.list_training_runs(p_limit integer default 50, p_offset integer default 0)
returns setof public.training_runs language sql stable set search_path = '' as $$
  select * from public.training_runs
   order by created_at desc, id desc
   limit least(greatest(p_limit, 0), 1000) offset greatest(p_offset, 0)
$$;

create or replace function public.blocking_training_run()
returns setof public.training_runs language sql stable set search_path = '' as $$
  select * from public.training_runs where status <> 'completed'
   order by created_at limit 1
$$;

create or replace function public.processed_training_chunks(p_run_id uuid, p_chunk_ids text[])
returns setof text language sql stable set search_path = '' as $$
  select chunk_id from public.training_run_chunks
   where run_id = p_run_id and chunk_id = any(p_chunk_ids)
$$;

create or replace function public.list_training_pairs(
  p_run_id uuid, p_limit integer default 100, p_offset integer default 0
) returns setof public.training_pairs language sql stable set search_path = '' as $$
  select * from public.training_pairs where run_id = p_run_id
   order by id limit least(greatest(p_limit, 0), 10000) offset greatest(p_offset, 0)
$$;

create or replace function public.get_deep_memory_settings()
returns setof public.deep_memory_settings language sql stable set search_path = '' as $$
  select * from public.deep_memory_settings where id = 1
$$;

-- ---------------------------------------------------------------------------------------
-- Who may execute what
-- ---------------------------------------------------------------------------------------

revoke execute on function
  public.training_run_touch(), public.training_run_guard_parked(),
  public.training_run_transition_allowed(text, text), public.training_run_lock_key(),
  public.lock_training_run(uuid, text),
  deepmem_private.require_admin(), deepmem_private.lock_worker_run(uuid, integer, text[]),
  public.create_training_run(text, uuid, uuid),
  deepmem_private.create_training_run(text, uuid, uuid),
  public.transition_training_run(uuid, text[], text, text, boolean, integer),
  deepmem_private.transition_training_run(uuid, text[], text, text, boolean, integer),
  public.set_training_run_total(uuid, integer, integer),
  deepmem_private.set_training_run_total(uuid, integer, integer),
  public.set_training_run_job(uuid, text, integer),
  deepmem_private.set_training_run_job(uuid, text, integer),
  public.set_training_run_metrics(uuid, jsonb, integer),
  deepmem_private.set_training_run_metrics(uuid, jsonb, integer),
  public.record_training_batch(uuid, integer, jsonb, integer, bigint, text[]),
  deepmem_private.record_training_batch(uuid, integer, jsonb, integer, bigint, text[]),
  public.delete_training_run(uuid), deepmem_private.delete_training_run(uuid),
  public.update_deep_memory_settings(jsonb), deepmem_private.update_deep_memory_settings(jsonb),
  public.get_training_run(uuid), public.list_training_runs(integer, integer),
  public.blocking_training_run(), public.processed_training_chunks(uuid, text[]),
  public.list_training_pairs(uuid, integer, integer), public.get_deep_memory_settings()
  from public, anon, authenticated;

-- The service role may use the helpers (a function of a later migration running as invoker).
grant execute on function
  public.training_run_transition_allowed(text, text), public.training_run_lock_key(),
  public.lock_training_run(uuid, text)
  to service_role;

grant execute on function
  deepmem_private.require_admin(), deepmem_private.lock_worker_run(uuid, integer, text[])
  to service_role;

grant execute on function
  public.create_training_run(text, uuid, uuid),
  deepmem_private.create_training_run(text, uuid, uuid),
  public.transition_training_run(uuid, text[], text, text, boolean, integer),
  deepmem_private.transition_training_run(uuid, text[], text, text, boolean, integer),
  public.set_training_run_total(uuid, integer, integer),
  deepmem_private.set_training_run_total(uuid, integer, integer),
  public.set_training_run_job(uuid, text, integer),
  deepmem_private.set_training_run_job(uuid, text, integer),
  public.set_training_run_metrics(uuid, jsonb, integer),
  deepmem_private.set_training_run_metrics(uuid, jsonb, integer),
  public.record_training_batch(uuid, integer, jsonb, integer, bigint, text[]),
  deepmem_private.record_training_batch(uuid, integer, jsonb, integer, bigint, text[]),
  public.delete_training_run(uuid), deepmem_private.delete_training_run(uuid),
  public.update_deep_memory_settings(jsonb), deepmem_private.update_deep_memory_settings(jsonb),
  public.get_training_run(uuid), public.list_training_runs(integer, integer),
  public.blocking_training_run(), public.processed_training_chunks(uuid, text[]),
  public.list_training_pairs(uuid, integer, integer), public.get_deep_memory_settings()
  to authenticated, service_role;
