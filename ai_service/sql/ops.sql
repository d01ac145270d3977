-- What the metrics scrape, the operations page, `stats` and the health check read. Except for
-- `stats` (an all-time count that reads the whole table, for the CLI), each reads only
-- indexes' worth of rows, however long the history of finished jobs: the page refreshes
-- itself, and bench/claim_latency.py times these reads with a million finished jobs.

-- name: queue_depth
-- Unfinished jobs, each status read from its own partial index: one `status IN (...)` can use
-- neither and would read the whole table on every metrics scrape. Running means a live lease.
-- A lease that ran out with attempts left is claimable again (the claim's reclaim lane takes it
-- first): it waits, so it counts as pending. One with no attempts left is counted in neither:
-- the sweeper fails it within SWEEP_INTERVAL. Both lease tests are ranges on
-- ix_jobs_running_lease.
SELECT 'pending' AS status, task_type, model_profile, count(*) AS count FROM (
    SELECT task_type, model_profile FROM jobs WHERE status = 'pending'
    UNION ALL
    SELECT task_type, model_profile FROM jobs
    WHERE status = 'running' AND lease_expires_at <= now() AND attempts < max_attempts
) waiting GROUP BY task_type, model_profile
UNION ALL
SELECT 'running' AS status, task_type, model_profile, count(*) AS count FROM jobs
WHERE status = 'running' AND lease_expires_at > now() GROUP BY task_type, model_profile;

-- name: oldest_pending
-- The oldest pending job's age in seconds (NULL when none is pending).
SELECT extract(epoch FROM now() - min(created_at)) AS age FROM jobs
WHERE status = 'pending';

-- name: throughput
-- Finished jobs per 5-minute bucket over the last hour (ix_jobs_finished_at); bucket 0 is the
-- last five minutes.
SELECT floor(extract(epoch FROM now() - finished_at) / 300)::int AS bucket,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE status = 'expired') AS expired
FROM jobs WHERE finished_at > now() - interval '1 hour'
GROUP BY 1;

-- name: recent_failures
-- The last failures for good (ix_jobs_failed) and retries waiting out a backoff
-- (ix_jobs_claimable), newest first; `:category` and `:owner_service` narrow them (NULL: any).
-- Failures are few beside the finished jobs, so the filters read only rows those two indexes
-- already picked out.
(SELECT id, owner_service, owner_ref, task_type, model_profile, status, attempts, max_attempts,
        error_category, left(error_message, 300) AS error_message, created_at, updated_at
 FROM jobs
 WHERE status = 'failed' AND finished_at > now() - interval '1 day'
   AND (CAST(:category AS text) IS NULL OR error_category = CAST(:category AS text))
   AND (CAST(:owner_service AS text) IS NULL OR owner_service = CAST(:owner_service AS text))
 ORDER BY finished_at DESC LIMIT :limit)
UNION ALL
(SELECT id, owner_service, owner_ref, task_type, model_profile, status, attempts, max_attempts,
        error_category, left(error_message, 300) AS error_message, created_at, updated_at
 FROM jobs
 WHERE status = 'pending' AND error_category IS NOT NULL
   AND (CAST(:category AS text) IS NULL OR error_category = CAST(:category AS text))
   AND (CAST(:owner_service AS text) IS NULL OR owner_service = CAST(:owner_service AS text))
 ORDER BY updated_at DESC LIMIT :limit)
ORDER BY updated_at DESC LIMIT :limit;

-- name: failure_owner_services
-- The owner services the failures list can be narrowed to: those with a failure in it, read
-- from the same two indexes as recent_failures.
SELECT owner_service FROM jobs
WHERE status = 'failed' AND finished_at > now() - interval '1 day'
UNION
SELECT owner_service FROM jobs
WHERE status = 'pending' AND error_category IS NOT NULL
ORDER BY owner_service;

-- name: jobs_by_owner_ref
-- The page's search: the jobs a caller filed under `:owner_ref`, in any owner service, newest
-- first. ix_jobs_owner_ref leads with owner_service: the owner services are walked one index
-- probe each (a skip scan of ix_jobs_owner_service) and each is looked up in ix_jobs_owner_ref,
-- so the search reads pages by the number of owner services, never by the history's length,
-- and no index led by owner_ref makes every claim and completion write one entry more.
WITH RECURSIVE owner_services AS (
    (SELECT owner_service FROM jobs ORDER BY owner_service LIMIT 1)
    UNION ALL
    SELECT (SELECT j.owner_service FROM jobs j WHERE j.owner_service > o.owner_service
            ORDER BY j.owner_service LIMIT 1)
    FROM owner_services o WHERE o.owner_service IS NOT NULL
)
SELECT found.* FROM owner_services o CROSS JOIN LATERAL (
    SELECT id, owner_service, owner_ref, task_type, model_profile, status, attempts,
           max_attempts, error_category, left(error_message, 300) AS error_message, created_at,
           updated_at
    FROM jobs WHERE jobs.owner_service = o.owner_service AND owner_ref = :owner_ref
    ORDER BY created_at DESC, id DESC LIMIT :limit
) found
ORDER BY created_at DESC, id DESC LIMIT :limit;

-- name: workers_seen
-- The workers that hold a lease or finished a job in the last 10 minutes. A worker holding a
-- live lease is seen now; one that completed or failed a job itself (not a lease that expired
-- under it) was seen then.
WITH running AS (
    SELECT worker_id, count(*) AS running, string_agg(DISTINCT task_type, ', ') AS task_types
    FROM jobs WHERE status = 'running' AND lease_expires_at > now()
    GROUP BY worker_id
), finished AS (
    SELECT worker_id, max(finished_at) AS last_seen FROM jobs
    WHERE finished_at > now() - interval '10 minutes' AND worker_id IS NOT NULL
      AND (status = 'completed' OR status = 'failed' AND error_category <> 'lease_expired')
    GROUP BY worker_id
)
SELECT coalesce(r.worker_id, f.worker_id) AS worker_id, coalesce(r.running, 0) AS running,
       r.task_types, CASE WHEN r.worker_id IS NULL THEN f.last_seen ELSE now() END AS last_seen
FROM running r FULL JOIN finished f ON f.worker_id = r.worker_id
ORDER BY last_seen DESC;

-- name: stats_by_status
SELECT status, count(*) AS count FROM jobs GROUP BY status;

-- name: stats_by_task
SELECT task_type, model_profile, status, count(*) AS count FROM jobs
GROUP BY task_type, model_profile, status ORDER BY task_type, model_profile, status;

-- name: stats_failed_by_category
SELECT coalesce(error_category, 'unknown') AS error_category, count(*) AS count
FROM jobs WHERE status = 'failed' GROUP BY 1;

-- name: stats_finished_recently
SELECT count(*) AS count FROM jobs WHERE finished_at > now() - interval '5 minutes';

-- name: schema_version_table
-- Whether migrations ever ran here: alembic_version does not exist before the first one.
SELECT to_regclass('alembic_version') IS NOT NULL AS present;

-- name: schema_revision
SELECT max(version_num) AS revision FROM alembic_version;

-- name: webhook_troubles
-- The page's webhooks: registrations failing now (failing_since) or disabled, disabled ones
-- last, each with its pending and failed deliveries counted through
-- ix_webhook_deliveries_endpoint_id. Registrations are few (an admin makes each); a disabled
-- one's `updated_at` is when it was disabled, unless its secret was rotated since.
SELECT e.id, e.owner_service, e.url, e.state, e.disabled_reason, e.failing_since,
       e.updated_at,
       (SELECT count(*) FROM webhook_deliveries d
        WHERE d.endpoint_id = e.id AND d.state = 'pending') AS pending,
       (SELECT count(*) FROM webhook_deliveries d
        WHERE d.endpoint_id = e.id AND d.state = 'failed') AS failed
FROM webhook_endpoints e
WHERE e.failing_since IS NOT NULL OR e.state = 'disabled'
ORDER BY e.state = 'disabled', coalesce(e.failing_since, e.updated_at), e.id
LIMIT :limit;

-- name: webhook_backlog
-- Deliveries not yet sent, of every registration (ix_webhook_deliveries_due).
SELECT count(*) FROM webhook_deliveries WHERE state = 'pending';
