-- deepmem as it first shipped: one `failed` status for any failure.

create table public.training_runs (
  id uuid primary key default gen_random_uuid(),
  dataset text not null,
  status text not null default 'generating'
    check (status in ('generating', 'generated', 'training', 'completed', 'failed')),
  user_id uuid,
  deeplake_job_id text,
  error_message text,
  total_chunks integer not null default 0 check (total_chunks >= 0),
  processed_chunks integer not null default 0 check (processed_chunks >= 0),
  pair_count integer not null default 0 check (pair_count >= 0),
  attempt integer not null default 1 check (attempt >= 1),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create index training_runs_created_at_idx on public.training_runs (created_at desc);

create table public.training_pairs (
  id bigint generated always as identity primary key,
  run_id uuid not null references public.training_runs (id) on delete cascade,
  chunk_id text not null,
  question text not null,
  created_at timestamptz not null default now()
);

create index training_pairs_run_id_idx on public.training_pairs (run_id, id);

create table public.deep_memory_settings (
  id smallint primary key default 1 check (id = 1),
  questions_per_chunk integer not null default 3,
  llm_model text not null default 'gpt-4o-mini',
  embedding_model text not null default 'text-embedding-3-small',
  batch_size integer not null default 50,
  updated_at timestamptz not null default now()
);

insert into public.deep_memory_settings (id) values (1);

alter table public.training_runs enable row level security;
alter table public.training_pairs enable row level security;
alter table public.deep_memory_settings enable row level security;

-- Admins are marked in the JWT's app_metadata (set by the service role, not by the user).
create policy "admins manage training runs" on public.training_runs
  for all to authenticated
  using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin')
  with check (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin');

create policy "admins manage training pairs" on public.training_pairs
  for all to authenticated
  using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin')
  with check (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin');

create policy "admins manage settings" on public.deep_memory_settings
  for all to authenticated
  using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin')
  with check (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin');

revoke all on public.training_runs, public.training_pairs, public.deep_memory_settings from anon;
grant select, insert, update, delete
  on public.training_runs, public.training_pairs, public.deep_memory_settings
  to authenticated, service_role;

alter publication supabase_realtime add table public.training_runs;
