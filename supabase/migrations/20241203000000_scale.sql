-- A run of a million chunks without a person (issue #13).
--
-- Pairs read by keyset: a page is the next `p_limit` pairs of a run after the id `p_after`,
-- found through the (run_id, id) index, so a page at the end of a run of 3M pairs costs what
-- the first page costs. `list_training_pairs` (OFFSET) stays for the API's small pages.
-- The run is bounded by `(run_id, id) > (run, after) and run_id <= run`, not `run_id = run`:
-- with an equality the planner knows the order is the primary key's and walks that index,
-- filtering out every other run's pairs (measured: a first page read 10,501 rows for 500).

create or replace function public.list_training_pairs_after(
  p_run_id uuid, p_after bigint default 0, p_limit integer default 1000
) returns setof public.training_pairs language sql stable as $$
  select * from public.training_pairs
   where (run_id, id) > (p_run_id, coalesce(p_after, 0)) and run_id <= p_run_id
   order by run_id, id
   limit least(greatest(p_limit, 0), 10000)
$$;

revoke execute on function public.list_training_pairs_after(uuid, bigint, integer)
  from public, anon;
grant execute on function public.list_training_pairs_after(uuid, bigint, integer)
  to authenticated, service_role;

-- The plan's estimate of a generation (events, executions, wall time; see
-- deepmem/domain/handover.py), kept on the run with the chunk count it was made for.
alter table public.training_runs add column if not exists estimate jsonb;

create or replace function public.set_training_run_plan(
  p_run_id uuid, p_total_chunks integer, p_estimate jsonb default null
) returns setof public.training_runs language plpgsql as $$
begin
  perform public.lock_training_run(p_run_id, 'generating');
  return query update public.training_runs
                  set total_chunks = p_total_chunks,
                      estimate = coalesce(p_estimate, estimate)
                where id = p_run_id returning *;
end
$$;

revoke execute on function public.set_training_run_plan(uuid, integer, jsonb) from public, anon;
grant execute on function public.set_training_run_plan(uuid, integer, jsonb)
  to authenticated, service_role;
