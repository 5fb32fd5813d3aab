-- Failure recovery: one failed status per phase, so a run can be resumed in the phase it
-- failed in. A run that had reached training has a Deep Memory job id.

alter table public.training_runs drop constraint if exists training_runs_status_check;

update public.training_runs
   set status = case when deeplake_job_id is not null then 'training_failed'
                     else 'generating_failed' end,
       updated_at = now()
 where status = 'failed';

alter table public.training_runs add constraint training_runs_status_check
  check (status in ('generating', 'generated', 'training', 'completed',
                    'generating_failed', 'training_failed'));
