-- The circuit breaker of every model profile's endpoints, shared by the fleet: a row per
-- (profile, endpoint URL without credentials) in provider_endpoints, and each worker's calls
-- in flight per endpoint in provider_endpoint_load. Times are the database's clock: a row
-- says how many seconds remain (`ready_in`), never a worker's idea of now.
-- The rules (what an outcome changes) are ai_service/providers/breaker.py's; these statements
-- only read, compare-and-set, and let one worker win a trial.

-- name: endpoint_report
-- A worker's periodic look: it reports its calls in flight and last latencies, makes sure a
-- row exists for each endpoint it serves, forgets load reports nobody renewed, and reads every
-- breaker back. One round trip per refresh, whatever the job rate. The final SELECT sees the
-- table as it was before this statement's own changes, which is all a view needs.
WITH reported AS (
    SELECT * FROM unnest(CAST(:profiles AS text[]), CAST(:urls AS text[]),
                         CAST(:in_flight AS int[]), CAST(:latency_ms AS float8[]))
        AS r(profile, url, in_flight, latency_ms)
), created AS (
    INSERT INTO provider_endpoints (profile, url)
    SELECT profile, url FROM reported
    ON CONFLICT (profile, url) DO NOTHING
), latency AS (
    UPDATE provider_endpoints e SET last_latency_ms = r.latency_ms
    FROM reported r
    WHERE e.profile = r.profile AND e.url = r.url AND r.latency_ms IS NOT NULL
      AND e.last_latency_ms IS DISTINCT FROM r.latency_ms
), load AS (
    INSERT INTO provider_endpoint_load (profile, url, worker_id, in_flight, reported_at)
    SELECT profile, url, :worker_id, in_flight, now() FROM reported
    ON CONFLICT (profile, url, worker_id)
    DO UPDATE SET in_flight = excluded.in_flight, reported_at = excluded.reported_at
), forgotten AS (
    DELETE FROM provider_endpoint_load
    WHERE reported_at < now() - interval '1 hour'
)
SELECT e.profile, e.url, e.state, e.failures, e.version,
       coalesce(extract(epoch FROM e.opened_until - now()), 0)::float8 AS ready_in
FROM provider_endpoints e JOIN reported r ON e.profile = r.profile AND e.url = r.url;

-- name: endpoint_read
SELECT profile, url, state, failures, version,
       coalesce(extract(epoch FROM opened_until - now()), 0)::float8 AS ready_in
FROM provider_endpoints WHERE profile = :profile AND url = :url;

-- name: endpoint_change
-- Writes a change the rules decided from the row at `version`; answers nothing when another
-- worker changed the row since (the caller reads it again and decides again). A row nobody
-- created yet is created at version 1.
INSERT INTO provider_endpoints AS e (profile, url, state, failures, opened_until,
                                     cooldown_reason, last_error, version, updated_at)
VALUES (:profile, :url, :state, :failures,
        now() + make_interval(secs => CAST(:cooldown AS float8)),
        :reason, :error, 1, now())
ON CONFLICT (profile, url) DO UPDATE
SET state = excluded.state, failures = excluded.failures, opened_until = excluded.opened_until,
    cooldown_reason = excluded.cooldown_reason,
    last_error = coalesce(excluded.last_error, e.last_error),
    version = e.version + 1, updated_at = now()
WHERE e.version = :version
RETURNING e.profile, e.url, e.state, e.failures, e.version,
          coalesce(extract(epoch FROM e.opened_until - now()), 0)::float8 AS ready_in;

-- name: endpoint_trial
-- The one trial call after a cooldown: whoever flips the row to half_open first makes it; the
-- condition is false for everyone after, until the trial's own deadline passes unanswered.
UPDATE provider_endpoints
SET state = 'half_open', opened_until = now() + make_interval(secs => CAST(:deadline AS float8)),
    version = version + 1, updated_at = now()
WHERE profile = :profile AND url = :url AND state IN ('open', 'half_open')
  AND opened_until <= now()
RETURNING profile, url, state, failures, version,
          coalesce(extract(epoch FROM opened_until - now()), 0)::float8 AS ready_in;

-- name: endpoint_status
-- What the status page shows per endpoint: the breaker, and the calls in flight the workers
-- reported within the last `fresh` seconds (a worker that stopped reporting counts no more).
SELECT e.profile, e.url, e.state, e.failures, e.cooldown_reason, e.last_error,
       e.last_latency_ms, e.updated_at,
       CASE WHEN e.opened_until > now()
            THEN extract(epoch FROM e.opened_until - now())::float8 END AS ready_in,
       coalesce((SELECT sum(l.in_flight) FROM provider_endpoint_load l
                 WHERE l.profile = e.profile AND l.url = e.url
                   AND l.reported_at > now() - make_interval(secs => CAST(:fresh AS float8))),
                0)::int AS in_flight
FROM provider_endpoints e
WHERE e.profile = ANY(CAST(:profiles AS text[]))
ORDER BY e.profile, e.url;
