-- The claim: up to a number of claimable jobs handed to one worker, in one statement and one
-- round trip, each marked running with a fresh lease token and logged. Two shapes: without
-- caps (what most workers run, kept small) and with per-model-profile caps or capped owners.
--
-- The LIMIT is written into the text (the store substitutes `{limit}`, the only template)
-- rather than bound: knowing it, PostgreSQL settles on one generic plan for the prepared
-- claim, where with a bound LIMIT it planned every call afresh and the planning cost about as
-- much as the running (bench/claim_latency.py measures the claim).
--
-- Fair share between owner services: the pending jobs are shared out among the owners with
-- claimable work by weighted round-robin, with priority and age ordering only within an owner.
-- A claim keeps no state of its own: the memory across claims is each owner's running jobs
-- with a live lease. The k-th job an owner would get in this claim scores
-- (its running jobs + k) / its weight, and the lowest scores win; ties go to the owner whose
-- best job has the higher priority, then the older one. With one slot freed at a time, a slot
-- goes to the owner furthest below its weighted share of what runs, so a long backlog of one
-- owner delays another's new work by about one job per weight, not by the backlog's length.
--
-- The parts, top to bottom:
-- - expired: leases of crashed workers, reclaimed first whoever owns them, oldest lease first,
--   locked with SKIP LOCKED so concurrent claimers never wait for or share a row; an expired
--   lease with no attempts left is not the claim's: the sweeper fails it
--   (expire_exhausted_leases in jobs.sql), so no claim ever ends another worker's job;
-- - claimable: pending, due (run_after) and not past its deadline, in every lane that takes
--   pending jobs: a job past its deadline is never claimed, even before the sweeper marks it
--   expired (expire_overdue_jobs in jobs.sql); like a job not yet due, it is stepped over;
-- - firsts: each owner's best claimable job, found by stepping through ix_jobs_owner_claimable
--   one owner at a time (a loose index scan: one probe per owner with work, never a read of
--   the jobs behind an owner's first; bench/fair_claim.py holds 100 owners with work to
--   at most 1.3 times one). As in the plain order, jobs the worker does not serve (task type,
--   profile) or not yet due are stepped over one by one within their owner;
-- - running/shares/cutoff/slots/quotas: each owner's weight (owners, default 1) and running
--   jobs, the {limit} best (owner, k) scores, and so how many jobs each owner gets;
-- - fair: each owner's quota of its best jobs, locked with SKIP LOCKED (one probe per owner
--   that gets any); ranked gives each its score;
-- - fill: when the fair share comes back short (an owner had fewer jobs than its quota, or a
--   concurrent claimer holds them), the rest in plain priority and age order; in the uncapped
--   shape it is read only then;
-- - capped shape only: caps/busy/full_profiles: a profile's running jobs with a live lease
--   count against its cap, and no more than the free capacity is chosen; a capped owner
--   (owners.max_running) is claimed only by a claim that holds its lock
--   (lock_capped_owners, passed as `:capped_owners`) and never past its cap; the uncapped
--   shape leaves capped owners' jobs alone;
-- - exhausted: owners over their daily token budget; every lane leaves their jobs alone;
-- - claimed: one UPDATE ... RETURNING, each job with a fresh lease token, and its event; the
--   answer is the jobs alone (`lane` stays inside), highest priority first, then oldest.

-- name: claim_jobs
-- The claim without caps.
WITH RECURSIVE exhausted AS MATERIALIZED (
    -- owners over their daily token budget (owners.daily_tokens): none of their jobs is
    -- claimed, so they wait; only owners with a budget are read, each one range of today's
    -- rows in the ledger's primary key (owner, hour, ...)
    SELECT o.owner_service FROM owners o
    WHERE o.daily_tokens IS NOT NULL AND o.daily_tokens <= (
        SELECT coalesce(sum(u.prompt_tokens + u.completion_tokens), 0) FROM usage_ledger u
        WHERE u.owner_service = o.owner_service AND u.hour >= date_trunc('day', now(), 'UTC'))
), expired AS (
    SELECT id, model_profile, priority, created_at, 0 AS lane, 0.0::float8 AS share FROM jobs
    WHERE status = 'running' AND lease_expires_at <= now() AND attempts < max_attempts
      AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
      AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
      AND owner_service NOT IN (SELECT owner_service FROM exhausted)
    ORDER BY lease_expires_at
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), firsts AS (
    (SELECT owner_service, priority, created_at FROM jobs
     WHERE status = 'pending' AND run_after <= now()
       AND (deadline IS NULL OR deadline > now())
       AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
       AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
     ORDER BY owner_service, priority DESC, created_at
     LIMIT 1)
    UNION ALL
    SELECT n.* FROM firsts f CROSS JOIN LATERAL (
        SELECT owner_service, priority, created_at FROM jobs
        WHERE status = 'pending' AND owner_service > f.owner_service AND run_after <= now()
          AND (deadline IS NULL OR deadline > now())
          AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
          AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
        ORDER BY owner_service, priority DESC, created_at
        LIMIT 1) n
), running AS MATERIALIZED (
    -- one object of owner to count, looked up per owner (a join of the two lists compared
    -- every owner with work to every owner running jobs)
    SELECT coalesce(jsonb_object_agg(owner_service, n), jsonb_build_object()) AS by_owner FROM (
        SELECT owner_service, count(*) AS n FROM jobs
        WHERE status = 'running' AND lease_expires_at > now()
        GROUP BY owner_service) counted
), shares AS (
    SELECT * FROM (
        SELECT f.owner_service, f.priority, f.created_at, coalesce(o.weight, 1) AS weight,
               coalesce((r.by_owner ->> f.owner_service)::int, 0) AS running, o.max_running
        FROM firsts f CROSS JOIN running r
        LEFT JOIN owners o ON o.owner_service = f.owner_service
        WHERE o.max_running IS NULL
          AND f.owner_service NOT IN (SELECT owner_service FROM exhausted)
    ) s WHERE max_running IS NULL OR running < max_running
), cutoff AS (
    -- with {limit} owners or more, the {limit}-th best first-job score: no job scoring worse
    -- can be among the {limit} best, so only owners at or under it get slots, each only as
    -- far as it
    SELECT CASE WHEN count(*) >= {limit} THEN max(score) END AS score FROM (
        SELECT (running + 1)::float8 / weight AS score FROM shares
        ORDER BY 1 LIMIT {limit}) best
), slots AS (
    SELECT s.owner_service, s.running, s.weight FROM shares s CROSS JOIN cutoff c
    CROSS JOIN generate_series(1, least({limit}, coalesce(s.max_running - s.running, {limit}),
                                        coalesce(floor(c.score * s.weight - s.running + 1e-9)::int,
                                                 {limit}))) AS k
    WHERE c.score IS NULL OR (s.running + 1)::float8 / s.weight <= c.score + 1e-9
    ORDER BY (s.running + k)::float8 / s.weight, s.priority DESC, s.created_at
    LIMIT {limit}
), quotas AS (
    SELECT owner_service, count(*) AS quota, min(running) AS running, min(weight) AS weight
    FROM slots GROUP BY owner_service
), fair AS (
    SELECT q.owner_service, p.* FROM quotas q CROSS JOIN LATERAL (
        SELECT id, model_profile, priority, created_at FROM jobs
        WHERE status = 'pending' AND owner_service = q.owner_service AND run_after <= now()
          AND (deadline IS NULL OR deadline > now())
          AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
          AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
        ORDER BY priority DESC, created_at
        LIMIT q.quota
        FOR UPDATE SKIP LOCKED) p
), ranked AS (
    SELECT f.id, f.model_profile, f.priority, f.created_at, 1 AS lane,
           (q.running + row_number() OVER (
               PARTITION BY f.owner_service ORDER BY f.priority DESC, f.created_at
           ))::float8 / q.weight AS share
    FROM fair f JOIN quotas q ON q.owner_service = f.owner_service
), fill AS (
    SELECT id, model_profile, priority, created_at, 2 AS lane, 0.0::float8 AS share FROM jobs
    WHERE status = 'pending' AND run_after <= now()
      AND (deadline IS NULL OR deadline > now())
      AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
      AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
      AND id NOT IN (SELECT id FROM fair)
      AND owner_service NOT IN (SELECT owner_service FROM owners WHERE max_running IS NOT NULL)
      AND owner_service NOT IN (SELECT owner_service FROM exhausted)
    ORDER BY priority DESC, created_at
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), chosen AS (
    (SELECT id, lane FROM (SELECT * FROM expired UNION ALL
                           SELECT id, model_profile, priority, created_at, lane, share
                           FROM ranked) u
     ORDER BY lane, share, priority DESC, created_at
     LIMIT {limit})
    UNION ALL
    (SELECT id, lane FROM fill)  -- read only as far as the fair share left slots over
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
), abandoned_counted AS (
    -- A reclaimed lease ended an attempt its worker never reported (it died): the usage ledger
    -- counts that attempt, its usage unknown. Writes nothing when no lease was reclaimed.
    INSERT INTO usage_ledger AS l (owner_service, hour, model_profile, slot, attempts)
    SELECT c.owner_service, date_trunc('hour', now(), 'UTC'), c.model_profile,
           hashtext(:worker_id) & 7, count(*)
    FROM claimed c JOIN chosen ch ON ch.id = c.id AND ch.lane = 0
    GROUP BY c.owner_service, c.model_profile
    ORDER BY c.owner_service, c.model_profile
    ON CONFLICT (owner_service, hour, model_profile, slot) DO UPDATE SET
        attempts = l.attempts + excluded.attempts
)
SELECT * FROM claimed ORDER BY priority DESC, created_at;

-- name: claim_jobs_capped
-- The claim with per-profile caps (`:caps`, a JSON object of profile to cap, maybe empty) and
-- the capped owners this claim may serve (`:capped_owners`), run after lock_capped_profiles
-- and lock_capped_owners in the same transaction.
WITH RECURSIVE exhausted AS MATERIALIZED (
    -- owners over their daily token budget (owners.daily_tokens): none of their jobs is
    -- claimed, so they wait; only owners with a budget are read, each one range of today's
    -- rows in the ledger's primary key (owner, hour, ...)
    SELECT o.owner_service FROM owners o
    WHERE o.daily_tokens IS NOT NULL AND o.daily_tokens <= (
        SELECT coalesce(sum(u.prompt_tokens + u.completion_tokens), 0) FROM usage_ledger u
        WHERE u.owner_service = o.owner_service AND u.hour >= date_trunc('day', now(), 'UTC'))
), caps AS (
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
    SELECT id, model_profile, priority, created_at, 0 AS lane, 0.0::float8 AS share,
           owner_service FROM jobs
    WHERE status = 'running' AND lease_expires_at <= now() AND attempts < max_attempts
      AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
      AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
      AND model_profile NOT IN (SELECT model_profile FROM full_profiles)
      AND (owner_service NOT IN (SELECT owner_service FROM owners WHERE max_running IS NOT NULL)
           OR owner_service = ANY(CAST(:capped_owners AS text[])))
      AND owner_service NOT IN (SELECT owner_service FROM exhausted)
    ORDER BY lease_expires_at
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), firsts AS (
    (SELECT owner_service, priority, created_at FROM jobs
     WHERE status = 'pending' AND run_after <= now()
       AND (deadline IS NULL OR deadline > now())
       AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
       AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
     ORDER BY owner_service, priority DESC, created_at
     LIMIT 1)
    UNION ALL
    SELECT n.* FROM firsts f CROSS JOIN LATERAL (
        SELECT owner_service, priority, created_at FROM jobs
        WHERE status = 'pending' AND owner_service > f.owner_service AND run_after <= now()
          AND (deadline IS NULL OR deadline > now())
          AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
          AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
        ORDER BY owner_service, priority DESC, created_at
        LIMIT 1) n
), running AS MATERIALIZED (
    -- one object of owner to count, looked up per owner (a join of the two lists compared
    -- every owner with work to every owner running jobs)
    SELECT coalesce(jsonb_object_agg(owner_service, n), jsonb_build_object()) AS by_owner FROM (
        SELECT owner_service, count(*) AS n FROM jobs
        WHERE status = 'running' AND lease_expires_at > now()
        GROUP BY owner_service) counted
), shares AS (
    SELECT * FROM (
        SELECT f.owner_service, f.priority, f.created_at, coalesce(o.weight, 1) AS weight,
               coalesce((r.by_owner ->> f.owner_service)::int, 0) AS running, o.max_running
        FROM firsts f CROSS JOIN running r
        LEFT JOIN owners o ON o.owner_service = f.owner_service
        WHERE (o.max_running IS NULL OR f.owner_service = ANY(CAST(:capped_owners AS text[])))
          AND f.owner_service NOT IN (SELECT owner_service FROM exhausted)
    ) s WHERE max_running IS NULL OR running < max_running
), cutoff AS (
    -- with {limit} owners or more, the {limit}-th best first-job score: no job scoring worse
    -- can be among the {limit} best, so only owners at or under it get slots, each only as
    -- far as it
    SELECT CASE WHEN count(*) >= {limit} THEN max(score) END AS score FROM (
        SELECT (running + 1)::float8 / weight AS score FROM shares
        ORDER BY 1 LIMIT {limit}) best
), slots AS (
    SELECT s.owner_service, s.running, s.weight FROM shares s CROSS JOIN cutoff c
    CROSS JOIN generate_series(1, least({limit}, coalesce(s.max_running - s.running, {limit}),
                                        coalesce(floor(c.score * s.weight - s.running + 1e-9)::int,
                                                 {limit}))) AS k
    WHERE c.score IS NULL OR (s.running + 1)::float8 / s.weight <= c.score + 1e-9
    ORDER BY (s.running + k)::float8 / s.weight, s.priority DESC, s.created_at
    LIMIT {limit}
), quotas AS (
    SELECT owner_service, count(*) AS quota, min(running) AS running, min(weight) AS weight
    FROM slots GROUP BY owner_service
), fair AS (
    SELECT q.owner_service, p.* FROM quotas q CROSS JOIN LATERAL (
        SELECT id, model_profile, priority, created_at FROM jobs
        WHERE status = 'pending' AND owner_service = q.owner_service AND run_after <= now()
          AND (deadline IS NULL OR deadline > now())
          AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
          AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
          AND model_profile NOT IN (SELECT model_profile FROM full_profiles)
        ORDER BY priority DESC, created_at
        LIMIT q.quota
        FOR UPDATE SKIP LOCKED) p
), ranked AS (
    SELECT f.id, f.model_profile, f.priority, f.created_at, 1 AS lane, f.owner_service,
           (q.running + row_number() OVER (
               PARTITION BY f.owner_service ORDER BY f.priority DESC, f.created_at
           ))::float8 / q.weight AS share
    FROM fair f JOIN quotas q ON q.owner_service = f.owner_service
), fill AS (
    SELECT id, model_profile, priority, created_at, 2 AS lane, 0.0::float8 AS share,
           owner_service FROM jobs
    WHERE status = 'pending' AND run_after <= now()
      AND (deadline IS NULL OR deadline > now())
      AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
      AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))
      AND id NOT IN (SELECT id FROM fair)
      AND owner_service NOT IN (SELECT owner_service FROM owners WHERE max_running IS NOT NULL)
      AND owner_service NOT IN (SELECT owner_service FROM exhausted)
      AND model_profile NOT IN (SELECT model_profile FROM full_profiles)
    ORDER BY priority DESC, created_at
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), profile_ranked AS (
    -- each candidate's place among its profile's and among its owner's: reclaimed leases
    -- count against an owner's cap like the fair share's jobs
    SELECT u.*, row_number() OVER (
        PARTITION BY u.model_profile ORDER BY u.lane, u.share, u.priority DESC, u.created_at
    ) AS nth, row_number() OVER (
        PARTITION BY u.owner_service ORDER BY u.lane, u.share, u.priority DESC, u.created_at
    ) AS owner_nth
    FROM (SELECT * FROM expired UNION ALL
          SELECT id, model_profile, priority, created_at, lane, share, owner_service
          FROM ranked UNION ALL
          SELECT * FROM fill) u
), chosen AS (
    SELECT r.id, r.lane FROM profile_ranked r
    LEFT JOIN caps c ON c.model_profile = r.model_profile
    LEFT JOIN busy b ON b.model_profile = r.model_profile
    LEFT JOIN owners o ON o.owner_service = r.owner_service
    CROSS JOIN running rc
    WHERE (c.cap IS NULL OR r.nth <= c.cap - coalesce(b.running, 0))
      AND (o.max_running IS NULL
           OR r.owner_nth <= o.max_running - coalesce((rc.by_owner ->> r.owner_service)::int, 0))
    ORDER BY r.lane, r.share, r.priority DESC, r.created_at
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
), abandoned_counted AS (
    -- A reclaimed lease ended an attempt its worker never reported (it died): the usage ledger
    -- counts that attempt, its usage unknown. Writes nothing when no lease was reclaimed.
    INSERT INTO usage_ledger AS l (owner_service, hour, model_profile, slot, attempts)
    SELECT c.owner_service, date_trunc('hour', now(), 'UTC'), c.model_profile,
           hashtext(:worker_id) & 7, count(*)
    FROM claimed c JOIN chosen ch ON ch.id = c.id AND ch.lane = 0
    GROUP BY c.owner_service, c.model_profile
    ORDER BY c.owner_service, c.model_profile
    ON CONFLICT (owner_service, hour, model_profile, slot) DO UPDATE SET
        attempts = l.attempts + excluded.attempts
)
SELECT * FROM claimed ORDER BY priority DESC, created_at;

-- name: lock_capped_profiles
-- Capped profiles are claimed one claimer at a time: the cap counts committed running jobs, so
-- two concurrent claims could otherwise both see room for the last slot.
SELECT pg_advisory_xact_lock(hashtextextended('ai_service.claim:' || p, 0))
FROM unnest(CAST(:profiles AS text[])) AS p ORDER BY p;

-- name: lock_capped_owners
-- Capped owners likewise, each under its own lock, taken after the profiles' in the same
-- order by every claimer.
SELECT pg_advisory_xact_lock(hashtextextended('ai_service.claim.owner:' || o, 0))
FROM unnest(CAST(:owners AS text[])) AS o ORDER BY o;
