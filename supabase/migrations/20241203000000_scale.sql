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
