"""RunStore adapters. Every rule is one SQL function (`supabase/migrations`); `rpc.py` calls them
and maps their error codes, `postgres.py` (psycopg) and `supabase.py` (supabase-py `rpc()`) only
carry the calls.
"""
