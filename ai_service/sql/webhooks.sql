-- Webhook registrations and their outbox (ai_service/store/webhooks.py). A delivery's `state`
-- and a registration's are declared in ai_service/states.py (DeliveryState, EndpointState).

-- name: insert_endpoint
INSERT INTO webhook_endpoints (id, owner_service, url, events, secret)
VALUES (:id, :owner_service, :url, CAST(:events AS text[]), :secret)
RETURNING id, owner_service, url, events, state, disabled_reason, failing_since,
          previous_secret_expires_at, created_at, updated_at, secret, previous_secret;

-- name: list_endpoints
SELECT id, owner_service, url, events, state, disabled_reason, failing_since,
       previous_secret_expires_at, created_at, updated_at, secret, previous_secret
FROM webhook_endpoints
WHERE CAST(:owner_service AS text) IS NULL OR owner_service = CAST(:owner_service AS text)
ORDER BY created_at, id;

-- name: delete_endpoint
-- Its deliveries and job callbacks go with it (ON DELETE CASCADE).
DELETE FROM webhook_endpoints WHERE id = :id RETURNING id;

-- name: rotate_endpoint
-- A new secret; the one it replaces keeps signing during the overlap, so a receiver can take
-- the new one at its own pace. Rotating again within the overlap ends the oldest at once.
UPDATE webhook_endpoints SET previous_secret = secret, secret = :secret,
    previous_secret_expires_at = now() + make_interval(secs => :overlap), updated_at = now()
WHERE id = :id
RETURNING id, owner_service, url, events, state, disabled_reason, failing_since,
          previous_secret_expires_at, created_at, updated_at, secret, previous_secret;

-- name: insert_callbacks
-- New jobs' callback URLs, each under the active registration of its owner service whose URL
-- it starts with (the longest when several do). It must start with the whole URL up to a
-- boundary: https://a.example is no prefix of https://a.example.evil.com. Answers the jobs
-- that found one; the caller refuses the batch when one did not.
INSERT INTO job_callbacks (job_id, endpoint_id, url)
SELECT x.job_id, e.id, x.url
FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS x(job_id uuid, owner_service text, url text)
CROSS JOIN LATERAL (
    SELECT id FROM webhook_endpoints
    WHERE owner_service = x.owner_service AND state = 'active'
      AND (x.url = url
           OR (left(x.url, length(url)) = url
               AND (right(url, 1) = '/' OR substr(x.url, length(url) + 1, 1) IN ('/', '?'))))
    ORDER BY length(url) DESC, created_at
    LIMIT 1
) e
RETURNING job_id;

-- name: queue_deliveries
-- The outbox rows of jobs that reached a final state in the caller's transaction (cancel, a
-- final failure, the sweeper's expiry): one per registration of the job's owner service that
-- wants the event, to the job's callback_url where it gave one under that registration.
INSERT INTO webhook_deliveries (id, endpoint_id, job_id, event_type, url)
SELECT gen_random_uuid(), e.id, x.job_id, x.event_type, coalesce(cb.url, e.url)
FROM jsonb_to_recordset(CAST(:items AS jsonb))
    AS x(job_id uuid, owner_service text, event_type text)
JOIN webhook_endpoints e ON e.owner_service = x.owner_service
 AND e.state = 'active' AND x.event_type = ANY(e.events)
LEFT JOIN job_callbacks cb ON cb.job_id = x.job_id AND cb.endpoint_id = e.id
RETURNING id;

-- name: lease_deliveries
-- Due deliveries for one dispatcher, each under a fresh lease token: SKIP LOCKED so that
-- dispatchers running at once never take the same row, and an expired lease (a dispatcher
-- killed mid-send) makes its delivery due again. Taking a lease counts the attempt.
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= now()
      AND (lease_expires_at IS NULL OR lease_expires_at <= now())
    ORDER BY next_attempt_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d SET lease_token = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => :lease_seconds),
    attempts = d.attempts + 1, updated_at = now()
FROM due, webhook_endpoints e
WHERE d.id = due.id AND e.id = d.endpoint_id
RETURNING d.id, d.endpoint_id, d.job_id, d.event_type, d.url, d.payload, d.attempts,
          d.lease_token, d.created_at,
          array_remove(ARRAY[e.secret, CASE WHEN e.previous_secret_expires_at > now()
                                            THEN e.previous_secret END], NULL) AS secrets;

-- name: delivered
-- A 2xx: the delivery is done and its registration is no longer failing. Guarded by the
-- lease: a dispatcher whose lease ran out changes nothing (zero rows). Answers the lag from
-- the job's final state (when the delivery was queued) to now, on the database's clock, so a
-- worker's clock does not skew the metric.
WITH changed AS (
    UPDATE webhook_deliveries SET state = 'delivered', payload = :payload,
        last_status_code = :status_code, last_error = NULL, finished_at = now(),
        lease_token = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE id = :id AND lease_token = :lease_token AND state = 'pending'
    RETURNING endpoint_id, created_at
), healthy AS (
    UPDATE webhook_endpoints SET failing_since = NULL
    WHERE id IN (SELECT endpoint_id FROM changed) AND failing_since IS NOT NULL
)
SELECT endpoint_id, greatest(extract(epoch FROM now() - created_at), 0) AS lag FROM changed;

-- name: attempt_failed
-- Anything but a 2xx: due again after `:delay` seconds, or failed for good when `:final`.
-- Answers since when its registration has been failing, for the dispatcher to disable one
-- that has failed for too long. Guarded by the lease as `delivered` is.
WITH changed AS (
    UPDATE webhook_deliveries SET
        state = CASE WHEN :final THEN 'failed' ELSE 'pending' END,
        next_attempt_at = CASE WHEN :final THEN next_attempt_at
                               ELSE now() + make_interval(secs => :delay) END,
        finished_at = CASE WHEN :final THEN now() END,
        payload = :payload, last_status_code = :status_code, last_error = :error,
        lease_token = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE id = :id AND lease_token = :lease_token AND state = 'pending'
    RETURNING endpoint_id
), failing AS (
    UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now())
    WHERE id IN (SELECT endpoint_id FROM changed)
    RETURNING id, failing_since, failing_since <= now() - make_interval(secs => :disable_after)
        AS failing_too_long
)
SELECT id, failing_too_long FROM failing;

-- name: disable_endpoint
-- A registration that answered 410 or failed for too long: disabled with the reason, and its
-- pending deliveries failed with it (nothing will ever send them).
WITH disabled AS (
    UPDATE webhook_endpoints SET state = 'disabled', disabled_reason = :reason,
        updated_at = now()
    WHERE id = :id AND state = 'active'
    RETURNING id
), dropped AS (
    UPDATE webhook_deliveries SET state = 'failed', last_error = :reason, finished_at = now(),
        lease_token = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE endpoint_id IN (SELECT id FROM disabled) AND state = 'pending'
    RETURNING id
)
SELECT count(*) FROM dropped;

-- name: list_deliveries
-- Newest first, keyset-paginated on (created_at, id) as list_jobs is; a NULL filter is no
-- filter, and `:after_created_at`/`:after_id` come from the previous page's cursor.
SELECT id, endpoint_id, job_id, event_type, url, state, attempts, next_attempt_at,
       last_status_code, last_error, created_at, finished_at
FROM webhook_deliveries
WHERE (CAST(:job_id AS uuid) IS NULL OR job_id = CAST(:job_id AS uuid))
  AND (CAST(:endpoint_id AS uuid) IS NULL OR endpoint_id = CAST(:endpoint_id AS uuid))
  AND (CAST(:state AS text) IS NULL OR state = CAST(:state AS text))
  AND (CAST(:after_created_at AS timestamptz) IS NULL
       OR (created_at, id) < (CAST(:after_created_at AS timestamptz), CAST(:after_id AS uuid)))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: replay_delivery
-- An operator sends a finished delivery again: due now, its attempts counted afresh, the
-- same webhook-id and the same bytes (its payload is kept). Only a delivered or failed one,
-- of an active registration: a pending one is still being tried.
UPDATE webhook_deliveries d SET state = 'pending', attempts = 0, next_attempt_at = now(),
    finished_at = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
FROM webhook_endpoints e
WHERE d.id = :id AND e.id = d.endpoint_id AND e.state = 'active'
  AND d.state IN ('delivered', 'failed')
RETURNING d.id, d.endpoint_id, d.job_id, d.event_type, d.url, d.state, d.attempts,
          d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.finished_at;

-- name: delivery_and_endpoint_state
SELECT d.state, e.state FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
WHERE d.id = :id;

-- name: replay_endpoint_deliveries
-- An operator sends again every delivery of one registration in `:state` (delivered or
-- failed), as replay_delivery sends one: due now, attempts counted afresh, same webhook-id and
-- bytes. Only while the registration is active. Answers the deliveries queued again.
UPDATE webhook_deliveries d SET state = 'pending', attempts = 0, next_attempt_at = now(),
    finished_at = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
FROM webhook_endpoints e
WHERE d.endpoint_id = :endpoint_id AND e.id = d.endpoint_id AND e.state = 'active'
  AND d.state = :state AND d.state IN ('delivered', 'failed')
RETURNING d.id;

-- name: endpoint_state
SELECT state FROM webhook_endpoints WHERE id = :id;

-- name: get_endpoint
SELECT id, owner_service, url, events, state, disabled_reason, failing_since,
       previous_secret_expires_at, created_at, updated_at, secret, previous_secret
FROM webhook_endpoints WHERE id = :id;
