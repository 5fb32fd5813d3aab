-- A compare-and-set on the attempt too: a failure reported by an old execution must never
-- fail a newer attempt of the same run, even when a proceed lands between the report's read
-- and its write.

drop function if exists public.transition_training_run(uuid, text[], text, text, boolean);

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
       and (p_attempt is null or attempt = p_attempt)
    returning *;
end
$$;

revoke execute on function public.transition_training_run(uuid, text[], text, text, boolean, integer)
  from public, anon;
grant execute on function public.transition_training_run(uuid, text[], text, text, boolean, integer)
  to authenticated, service_role;
