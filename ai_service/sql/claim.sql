-- The claim: up to a number of claimable jobs handed to one worker, in one statement and one
-- round trip, each marked running with a fresh lease token and logged. Two shapes: without
-- per-model-profile caps (what most workers run, kept small) and with them.
--
-- The LIMIT is written into the text (the store substitutes `{limit}`, the only template)
-- rather than bound: knowing it, PostgreSQL settles on one generic plan for the prepared
-- claim, where with a bound LIMIT it planned every call afresh and the planning cost about as
-- much as the running (bench/claim_latency.py measures the claim).
--
-- The parts, top to bottom:
-- - expired + pending: candidates locked with SKIP LOCKED so concurrent claimers never wait for
--   or share a row; expired leases (crashed workers) first, then priority, then oldest; an
--   expired lease with no attempts left is not the claim's: the sweeper fails it
--   (expire_exhausted_leases in jobs.sql), so no claim ever ends another worker's job;
-- - caps/busy/full_profiles/ranked (capped shape only): a profile's running jobs with a live
--   lease count against its cap, and no more than the free capacity is chosen;
-- - claimed: one UPDATE ... RETURNING, each job with a fresh lease token, and its event; the
--   answer is the jobs alone (`lane` stays inside), highest priority first, then oldest.

-- name: claim_jobs
-- The claim without caps.
WITH expired AS (
    SELECT id, model_profile, priority, created_at, 0 AS lane FROM jobs
    WHERE status = 'running' AND lease_expires_at <= now() AND attempts < max_attempts
      AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
      AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
    ORDER BY lease_expires_at
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), pending AS (
    SELECT id, model_profile, priority, created_at, 1 AS lane FROM jobs
    WHERE status = 'pending' AND run_after <= now()
      AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
      AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
    ORDER BY priority DESC, created_at
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), chosen AS (
    SELECT id, lane FROM (SELECT * FROM expired UNION ALL SELECT * FROM pending) u
    ORDER BY lane, priority DESC, created_at
    LIMIT {limit}
), claimed AS (
    UPDATE jobs SET status = 'running', attempts = jobs.attempts + 1, worker_id = :worker_id,
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => :lease_seconds),
        started_at = now(), updated_at = now()
    FROM chosen WHERE jobs.id = chosen.id
    RETURNING jobs.*
), claimed_logged AS (
    INSERT INTO job_events (job_id, event, status, worker_id, attempt, error_category, message)
    SELECT id, CASE WHEN lane = 0 THEN 'reclaimed' ELSE 'claimed' END, status, worker_id, attempts,
           error_category, left(error_message, 1000) FROM claimed JOIN chosen USING (id)
)
SELECT * FROM claimed ORDER BY priority DESC, created_at;

-- name: claim_jobs_capped
-- The claim with per-profile caps (`:caps`, a JSON object of profile to cap), run after
-- lock_capped_profiles in the same transaction.
WITH caps AS (
    SELECT key AS model_profile, value::int AS cap FROM jsonb_each_text(CAST(:caps AS jsonb))
), busy AS (
    SELECT j.model_profile, count(*) AS running
    FROM jobs j JOIN caps c ON c.model_profile = j.model_profile
    WHERE j.status = 'running' AND j.lease_expires_at > now()
    GROUP BY j.model_profile
), full_profiles AS (
    SELECT c.model_profile FROM caps c LEFT JOIN busy b ON b.model_profile = c.model_profile
    WHERE c.cap <= coalesce(b.running, 0)
), expired AS (
    SELECT id, model_profile, priority, created_at, 0 AS lane FROM jobs
    WHERE status = 'running' AND lease_expires_at <= now() AND attempts < max_attempts
      AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
      AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
      AND model_profile NOT IN (SELECT model_profile FROM full_profiles)
    ORDER BY lease_expires_at
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), pending AS (
    SELECT id, model_profile, priority, created_at, 1 AS lane FROM jobs
    WHERE status = 'pending' AND run_after <= now()
      AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
      AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
      AND model_profile NOT IN (SELECT model_profile FROM full_profiles)
    ORDER BY priority DESC, created_at
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), ranked AS (
    SELECT u.*, row_number() OVER (
        PARTITION BY u.model_profile ORDER BY u.lane, u.priority DESC, u.created_at) AS nth
    FROM (SELECT * FROM expired UNION ALL SELECT * FROM pending) u
), chosen AS (
    SELECT r.id, r.lane FROM ranked r
    LEFT JOIN caps c ON c.model_profile = r.model_profile
    LEFT JOIN busy b ON b.model_profile = r.model_profile
    WHERE c.cap IS NULL OR r.nth <= c.cap - coalesce(b.running, 0)
    ORDER BY r.lane, r.priority DESC, r.created_at
    LIMIT {limit}
), claimed AS (
    UPDATE jobs SET status = 'running', attempts = jobs.attempts + 1, worker_id = :worker_id,
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => :lease_seconds),
        started_at = now(), updated_at = now()
    FROM chosen WHERE jobs.id = chosen.id
    RETURNING jobs.*
), claimed_logged AS (
    INSERT INTO job_events (job_id, event, status, worker_id, attempt, error_category, message)
    SELECT id, CASE WHEN lane = 0 THEN 'reclaimed' ELSE 'claimed' END, status, worker_id, attempts,
           error_category, left(error_message, 1000) FROM claimed JOIN chosen USING (id)
)
SELECT * FROM claimed ORDER BY priority DESC, created_at;

-- name: lock_capped_profiles
-- Capped profiles are claimed one claimer at a time: the cap counts committed running jobs, so
-- two concurrent claims could otherwise both see room for the last slot.
SELECT pg_advisory_xact_lock(hashtextextended('ai_service.claim:' || p, 0))
FROM unnest(CAST(:profiles AS text[])) AS p ORDER BY p;
