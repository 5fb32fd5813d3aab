-- A local execution's lease on its run (DESIGN: the local safety net). The process running a
-- run's execution on one machine (moto's interpreter in the CLI or `deepmem serve`) renews a
-- lease on (run, attempt) while the execution runs; a run whose lease expired lost its process
-- (killed, machine off), and the next deepmem command fails it with its phase's failed status,
-- as the EventBridge rule does in AWS. Executions in Step Functions never take a lease.
--
-- The leases live in their own table so a heartbeat neither touches `training_runs.updated_at`
-- nor sends a Realtime change. Only these functions read or write it; no API role holds a
-- privilege on the table. As the rules migration (20241201000000) asks: the security definer
-- bodies live in `deepmem_private` (not exposed), with an empty search_path, and `public` holds
-- security invoker doors that forward.

create table public.training_run_leases (
  run_id uuid primary key references public.training_runs (id) on delete cascade,
  attempt integer not null check (attempt >= 1),
  owner_id text not null,
  heartbeat_at timestamptz not null,
  expires_at timestamptz not null
);

alter table public.training_run_leases enable row level security;
revoke all on public.training_run_leases from public, anon, authenticated;

-- Take or renew the lease of `p_owner` on the run's attempt `p_attempt` for `p_ttl_seconds`.
-- False when the run is not active at that attempt, or another owner holds an unexpired lease
-- on it; a newer attempt's lease is never overwritten by an older one.
create or replace function deepmem_private.renew_training_run_lease(
  p_run_id uuid, p_attempt integer, p_owner text, p_ttl_seconds double precision
) returns boolean
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_now timestamptz := pg_catalog.clock_timestamp();
begin
  if not exists (
    select 1 from public.training_runs
     where id = p_run_id and attempt = p_attempt and status in ('generating', 'training')
  ) then
    return false;
  end if;
  insert into public.training_run_leases as l (run_id, attempt, owner_id, heartbeat_at, expires_at)
  values (p_run_id, p_attempt, p_owner, v_now,
          v_now + pg_catalog.make_interval(secs => greatest(p_ttl_seconds, 0)))
  on conflict (run_id) do update
     set attempt = excluded.attempt, owner_id = excluded.owner_id,
         heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at
   where l.attempt < excluded.attempt
      or (l.attempt = excluded.attempt and (l.owner_id = excluded.owner_id or l.expires_at <= v_now));
  return found;
end
$$;

-- Active runs whose current attempt holds a lease that expired: their process is gone.
create or replace function deepmem_private.expired_training_run_leases()
returns setof public.training_runs
language sql volatile security definer set search_path = '' as $$
  select r.*
    from public.training_runs r
    join public.training_run_leases l on l.run_id = r.id and l.attempt = r.attempt
   where r.status in ('generating', 'training')
     and l.expires_at <= pg_catalog.clock_timestamp()
   order by r.created_at
$$;

create or replace function public.renew_training_run_lease(
  p_run_id uuid, p_attempt integer, p_owner text, p_ttl_seconds double precision
) returns boolean language sql set search_path = '' as $$
  select deepmem_private.renew_training_run_lease(p_run_id, p_attempt, p_owner, p_ttl_seconds)
$$;

create or replace function public.expired_training_run_leases()
returns setof public.training_runs language sql volatile set search_path = '' as $$
  select * from deepmem_private.expired_training_run_leases()
$$;

-- The process that leases runs is a trusted one (the CLI's own database role, or service_role
-- through PostgREST); no signed-in user takes or reads leases.
revoke execute on function
  public.renew_training_run_lease(uuid, integer, text, double precision),
  deepmem_private.renew_training_run_lease(uuid, integer, text, double precision),
  public.expired_training_run_leases(), deepmem_private.expired_training_run_leases()
  from public, anon, authenticated;
grant execute on function
  public.renew_training_run_lease(uuid, integer, text, double precision),
  deepmem_private.renew_training_run_lease(uuid, integer, text, double precision),
  public.expired_training_run_leases(), deepmem_private.expired_training_run_leases()
  to service_role;
