-- A run of a million chunks without a person (issue #13).
--
-- Pairs read by keyset: a page is the next `p_limit` pairs of a run after the id `p_after`,
-- found through the (run_id, id) index, so a page at the end of a run of 3M pairs costs what
-- the first page costs. `list_training_pairs` (OFFSET) stays for the API's small pages.
-- The run is bounded by `(run_id, id) > (run, after) and run_id <= run`, not `run_id = run`:
-- with an equality the planner knows the order is the primary key's and walks that index,
-- filtering out every other run's pairs (measured: a first page read 10,501 rows for 500).
--
-- Written in the shape of the rules migration (20241201000000_rules_no_caller_can_skip.sql):
-- the reader is `security invoker` in `public` (row-level security decides what it returns);
-- the writer is a `security definer` body in `deepmem_private` (require_admin, then
-- lock_worker_run at the worker's attempt: DM410 for a stale worker) behind an invoker door
-- of the same name in `public`; every name schema-qualified under `search_path = ''`.

create or replace function public.list_training_pairs_after(
  p_run_id uuid, p_after bigint default 0, p_limit integer default 1000
) returns setof public.training_pairs
language sql stable security invoker set search_path = '' as $$
  select * from public.training_pairs
   where (run_id, id) > (p_run_id, coalesce(p_after, 0)) and run_id <= p_run_id
   order by run_id, id
   limit least(greatest(p_limit, 0), 10000)
$$;

-- The plan's estimate of a generation (events, executions, wall time; see
-- deepmem/domain/handover.py), kept on the run with the chunk count it was made for.
-- `set_training_run_plan` is the plan's write (the chunk count and the estimate);
-- `set_training_run_total` (the rules' writer of the count alone) stays as it is.
alter table public.training_runs add column if not exists estimate jsonb;

create or replace function deepmem_private.set_training_run_plan(
  p_run_id uuid, p_total_chunks integer, p_attempt integer, p_estimate jsonb default null
) returns setof public.training_runs
language plpgsql security definer set search_path = '' as $$
begin
  perform deepmem_private.require_admin();
  perform deepmem_private.lock_worker_run(p_run_id, p_attempt, array['generating']);
  return query update public.training_runs
                  set total_chunks = p_total_chunks,
                      estimate = coalesce(p_estimate, public.training_runs.estimate)
                where id = p_run_id returning *;
end
$$;

create or replace function public.set_training_run_plan(
  p_run_id uuid, p_total_chunks integer, p_attempt integer, p_estimate jsonb default null
) returns setof public.training_runs language sql security invoker set search_path = '' as $$
  select * from deepmem_private.set_training_run_plan(
    p_run_id, p_total_chunks, p_attempt, p_estimate)
$$;

-- ---------------------------------------------------------------------------------------
-- Who may execute what
-- ---------------------------------------------------------------------------------------

revoke execute on function
  public.list_training_pairs_after(uuid, bigint, integer),
  public.set_training_run_plan(uuid, integer, integer, jsonb),
  deepmem_private.set_training_run_plan(uuid, integer, integer, jsonb)
  from public, anon, authenticated;

grant execute on function
  public.list_training_pairs_after(uuid, bigint, integer),
  public.set_training_run_plan(uuid, integer, integer, jsonb),
  deepmem_private.set_training_run_plan(uuid, integer, integer, jsonb)
  to authenticated, service_role;
