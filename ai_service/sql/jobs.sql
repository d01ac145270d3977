-- The jobs store's statements. Every status change is guarded by the status it expects (and,
-- for a worker, the lease token of its attempt), and writes its job_events rows in the same
-- statement, so the audit trail cannot miss a transition or record one that was rolled back.
-- Parameters are `:name`; a batch arrives as one JSON array (`:items`) read with
-- jsonb_to_recordset, so a batch is one statement whatever its size.

-- name: insert_jobs
-- A whole batch in one statement; ids are made by the caller so the answer keeps the batch's
-- order. A reused idempotency key inserts nothing (select_by_idempotency finds what it made).
WITH changed AS (
    INSERT INTO jobs (id, owner_service, owner_ref, task_type, model_profile, input, priority,
                      run_after, max_attempts, idempotency_key, deadline)
    SELECT x.id, x.owner_service, x.owner_ref, x.task_type, x.model_profile, x.input,
           coalesce(x.priority, 0), coalesce(x.run_after, now()), coalesce(x.max_attempts, 3),
           x.idempotency_key,
           -- a longest wait counts from creation: now() is the created_at this row gets
           coalesce(x.deadline, now() + make_interval(secs => x.max_wait))
    FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS x(
        id uuid, owner_service text, owner_ref text, task_type text, model_profile text,
        input jsonb, priority int, run_after timestamptz, max_attempts int, idempotency_key text,
        deadline timestamptz, max_wait int)
    ON CONFLICT (owner_service, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
), logged AS (
    INSERT INTO job_events (job_id, event, status, worker_id, attempt, error_category, message)
    SELECT id, 'created', status, worker_id, attempts, error_category,
           left(error_message, 1000) FROM changed
)
SELECT * FROM changed;

-- name: insert_jobs_brief
-- insert_jobs answering a JobBrief: what a batch create answers, without reading back a
-- thousand inputs just sent (bench/repository.py measures the batch create).
WITH changed AS (
    INSERT INTO jobs (id, owner_service, owner_ref, task_type, model_profile, input, priority,
                      run_after, max_attempts, idempotency_key, deadline)
    SELECT x.id, x.owner_service, x.owner_ref, x.task_type, x.model_profile, x.input,
           coalesce(x.priority, 0), coalesce(x.run_after, now()), coalesce(x.max_attempts, 3),
           x.idempotency_key,
           -- a longest wait counts from creation: now() is the created_at this row gets
           coalesce(x.deadline, now() + make_interval(secs => x.max_wait))
    FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS x(
        id uuid, owner_service text, owner_ref text, task_type text, model_profile text,
        input jsonb, priority int, run_after timestamptz, max_attempts int, idempotency_key text,
        deadline timestamptz, max_wait int)
    ON CONFLICT (owner_service, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, owner_ref, idempotency_key, status, task_type, model_profile, worker_id,
              lease_token, attempts, error_category, error_message
), logged AS (
    INSERT INTO job_events (job_id, event, status, worker_id, attempt, error_category, message)
    SELECT id, 'created', status, worker_id, attempts, error_category,
           left(error_message, 1000) FROM changed
)
SELECT id, owner_ref, idempotency_key, status, task_type, model_profile, worker_id, lease_token,
       attempts
FROM changed;

-- name: select_by_idempotency
-- The jobs that reused keys made, and whether each asked for the same input. The input is
-- compared here, as jsonb: read back into Python a number jsonb keeps as an exact decimal is
-- an int (1e23 → 100000000000000000000000), unequal to the float that was resent.
SELECT j.*, j.input = k.input AS same_input FROM jobs j
JOIN jsonb_to_recordset(CAST(:keys AS jsonb))
  AS k(owner_service text, idempotency_key text, input jsonb)
  ON j.owner_service = k.owner_service AND j.idempotency_key = k.idempotency_key;

-- name: get_job
-- One job. `:scope` is the owner services a caller token may see; NULL (workers, admins): all.
SELECT * FROM jobs
WHERE id = :id AND (CAST(:scope AS text[]) IS NULL OR owner_service = ANY(CAST(:scope AS text[])));

-- name: list_events
-- A job's transitions, oldest first.
SELECT * FROM job_events WHERE job_id = :job_id ORDER BY id;

-- name: list_jobs
-- Newest first, keyset-paginated on (created_at, id) so deep pages stay cheap; a NULL filter
-- is no filter, and `:after_created_at`/`:after_id` come from the previous page's cursor.
SELECT * FROM jobs
WHERE (CAST(:scope AS text[]) IS NULL OR owner_service = ANY(CAST(:scope AS text[])))
  AND (CAST(:owner_service AS text) IS NULL OR owner_service = CAST(:owner_service AS text))
  AND (CAST(:owner_ref AS text) IS NULL OR owner_ref = CAST(:owner_ref AS text))
  AND (CAST(:status AS text) IS NULL OR status = CAST(:status AS text))
  AND (CAST(:task_type AS text) IS NULL OR task_type = CAST(:task_type AS text))
  AND (CAST(:after_created_at AS timestamptz) IS NULL
       OR (created_at, id) < (CAST(:after_created_at AS timestamptz), CAST(:after_id AS uuid)))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: complete_jobs
-- Completes many jobs of one worker in one statement: results that finish together are
-- written together, and each is still guarded by its own lease token. The statement also
-- tells FINISHED_CHANNEL which of the jobs it finished someone waits on (PostgreSQL delivers
-- that on its commit).
WITH done AS (
    -- The items, parsed once for the completion and the usage ledger alike.
    SELECT * FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS item(
        id uuid, lease_token uuid, result jsonb, prompt_tokens bigint, completion_tokens bigint,
        audio_seconds float8, provider_seconds float8)
), changed AS (
    UPDATE jobs SET status = 'completed', result = done.result, finished_at = now(),
        updated_at = now(), lease_expires_at = NULL, error_category = NULL, error_message = NULL
    FROM done
    WHERE jobs.id = done.id AND jobs.lease_token = done.lease_token
      AND jobs.status = 'running' AND jobs.worker_id = :worker_id
    RETURNING jobs.*
), logged AS (
    INSERT INTO job_events (job_id, event, status, worker_id, attempt, error_category, message)
    SELECT id, 'completed', status, worker_id, attempts, error_category,
           left(error_message, 1000) FROM changed
), queued AS (
    -- The outbox (ai_service/dispatcher.py): a delivery per registration of the job's owner
    -- service that wants it, committed with the completion by this very statement.
    INSERT INTO webhook_deliveries (id, endpoint_id, job_id, event_type, url)
    SELECT gen_random_uuid(), e.id, changed.id, 'job.completed', coalesce(cb.url, e.url)
    FROM changed
    JOIN webhook_endpoints e ON e.owner_service = changed.owner_service
     AND e.state = 'active' AND 'job.completed' = ANY(e.events)
    LEFT JOIN job_callbacks cb ON cb.job_id = changed.id AND cb.endpoint_id = e.id
), used AS (
    -- The usage ledger (usage_ledger, migration 0013): each completed attempt's usage, which
    -- the caller read from its result into the item (ai_service/usage.py), added to its owner
    -- × profile × hour row in this same statement: the completion has no transaction, and
    -- one more CTE costs no round trip. Summed per row first (one INSERT may not update a row
    -- twice) and in key order, so two statements lock shared rows in the same order. The
    -- slot is this worker's: concurrent workers add to rows of their own instead of queueing
    -- on one hot row until commit (reads sum the slots).
    INSERT INTO usage_ledger AS l (owner_service, hour, model_profile, slot, attempts,
                                   prompt_tokens, completion_tokens, audio_seconds,
                                   provider_seconds)
    SELECT c.owner_service, date_trunc('hour', now(), 'UTC'), c.model_profile,
           hashtext(:worker_id) & 7, count(*), sum(u.prompt_tokens), sum(u.completion_tokens),
           sum(u.audio_seconds), sum(u.provider_seconds)
    FROM changed c JOIN done u ON u.id = c.id
    GROUP BY c.owner_service, c.model_profile
    ORDER BY c.owner_service, c.model_profile
    ON CONFLICT (owner_service, hour, model_profile, slot) DO UPDATE SET
        attempts = l.attempts + excluded.attempts,
        prompt_tokens = l.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = l.completion_tokens + excluded.completion_tokens,
        audio_seconds = l.audio_seconds + excluded.audio_seconds,
        provider_seconds = l.provider_seconds + excluded.provider_seconds
), told AS (
    -- Whoever waits on these jobs (a long poll, ai_service/longpoll.py) hears of them with
    -- this statement's commit rather than after one more round trip; see notify_finished.
    -- Only jobs someone waits on: with none, nothing is sent and no NOTIFY lock is taken.
    SELECT pg_notify(:finished_channel, string_agg(CAST(id AS text), ','))
    FROM (SELECT id, (row_number() OVER () - 1) / CAST(:ids_per_notice AS int) AS part
          FROM changed WHERE waited_until > now()) AS done_ids
    GROUP BY part
)
-- A CTE that only SELECTs runs only when read: counting what it sent makes it run.
SELECT changed.* FROM changed, (SELECT count(*) FROM told) AS sent;

-- name: complete_jobs_brief
-- complete_jobs answering a JobBrief: the worker's batches need what its metrics, its log
-- lines and its fencing need, not the input and the result it has just sent.
WITH done AS (
    -- The items, parsed once for the completion and the usage ledger alike.
    SELECT * FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS item(
        id uuid, lease_token uuid, result jsonb, prompt_tokens bigint, completion_tokens bigint,
        audio_seconds float8, provider_seconds float8)
), changed AS (
    UPDATE jobs SET status = 'completed', result = done.result, finished_at = now(),
        updated_at = now(), lease_expires_at = NULL, error_category = NULL, error_message = NULL
    FROM done
    WHERE jobs.id = done.id AND jobs.lease_token = done.lease_token
      AND jobs.status = 'running' AND jobs.worker_id = :worker_id
    RETURNING jobs.id, jobs.owner_service, jobs.owner_ref, jobs.idempotency_key, jobs.status,
              jobs.task_type, jobs.model_profile, jobs.worker_id, jobs.lease_token,
              jobs.attempts, jobs.error_category, jobs.error_message, jobs.waited_until
), logged AS (
    INSERT INTO job_events (job_id, event, status, worker_id, attempt, error_category, message)
    SELECT id, 'completed', status, worker_id, attempts, error_category,
           left(error_message, 1000) FROM changed
), queued AS (
    -- The outbox (ai_service/dispatcher.py): a delivery per registration of the job's owner
    -- service that wants it, committed with the completion by this very statement.
    INSERT INTO webhook_deliveries (id, endpoint_id, job_id, event_type, url)
    SELECT gen_random_uuid(), e.id, changed.id, 'job.completed', coalesce(cb.url, e.url)
    FROM changed
    JOIN webhook_endpoints e ON e.owner_service = changed.owner_service
     AND e.state = 'active' AND 'job.completed' = ANY(e.events)
    LEFT JOIN job_callbacks cb ON cb.job_id = changed.id AND cb.endpoint_id = e.id
), used AS (
    -- The usage ledger (usage_ledger, migration 0013): each completed attempt's usage, which
    -- the caller read from its result into the item (ai_service/usage.py), added to its owner
    -- × profile × hour row in this same statement: the completion has no transaction, and
    -- one more CTE costs no round trip. Summed per row first (one INSERT may not update a row
    -- twice) and in key order, so two statements lock shared rows in the same order. The
    -- slot is this worker's: concurrent workers add to rows of their own instead of queueing
    -- on one hot row until commit (reads sum the slots).
    INSERT INTO usage_ledger AS l (owner_service, hour, model_profile, slot, attempts,
                                   prompt_tokens, completion_tokens, audio_seconds,
                                   provider_seconds)
    SELECT c.owner_service, date_trunc('hour', now(), 'UTC'), c.model_profile,
           hashtext(:worker_id) & 7, count(*), sum(u.prompt_tokens), sum(u.completion_tokens),
           sum(u.audio_seconds), sum(u.provider_seconds)
    FROM changed c JOIN done u ON u.id = c.id
    GROUP BY c.owner_service, c.model_profile
    ORDER BY c.owner_service, c.model_profile
    ON CONFLICT (owner_service, hour, model_profile, slot) DO UPDATE SET
        attempts = l.attempts + excluded.attempts,
        prompt_tokens = l.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = l.completion_tokens + excluded.completion_tokens,
        audio_seconds = l.audio_seconds + excluded.audio_seconds,
        provider_seconds = l.provider_seconds + excluded.provider_seconds
), told AS (
    -- Whoever waits on these jobs (a long poll, ai_service/longpoll.py) hears of them with
    -- this statement's commit rather than after one more round trip; see notify_finished.
    -- Only jobs someone waits on: with none, nothing is sent and no NOTIFY lock is taken.
    SELECT pg_notify(:finished_channel, string_agg(CAST(id AS text), ','))
    FROM (SELECT id, (row_number() OVER () - 1) / CAST(:ids_per_notice AS int) AS part
          FROM changed WHERE waited_until > now()) AS done_ids
    GROUP BY part
)
SELECT id, owner_ref, idempotency_key, status, task_type, model_profile, worker_id, lease_token,
       attempts
FROM changed, (SELECT count(*) FROM told) AS sent;

-- name: fail_job
-- A failed attempt. A retryable failure with attempts left goes back to pending after a
-- jittered exponential backoff (or the provider's Retry-After); anything else is final.
WITH changed AS (
    UPDATE jobs SET
        status = CASE WHEN :retryable AND attempts < max_attempts THEN 'pending' ELSE 'failed' END,
        run_after = CASE WHEN :retryable AND attempts < max_attempts
            THEN now() + make_interval(secs => coalesce(CAST(:retry_after AS float8),
                least(:backoff_max, :backoff_base * power(2, greatest(attempts - 1, 0)))
                * (0.5 + random() * 0.5)))
            ELSE run_after END,
        finished_at = CASE WHEN :retryable AND attempts < max_attempts THEN NULL ELSE now() END,
        error_category = :category, error_message = :message,
        lease_expires_at = NULL, updated_at = now()
    WHERE id = :id AND status = 'running' AND lease_token = :lease_token
      AND worker_id = :worker_id
    RETURNING *
), logged AS (
    INSERT INTO job_events (job_id, event, status, worker_id, attempt, error_category, message)
    SELECT id, CASE WHEN status = 'pending' THEN 'attempt_failed' ELSE 'failed' END, status,
           worker_id, attempts, error_category, left(error_message, 1000) FROM changed
), used AS (
    -- The usage ledger: a failed or deferred attempt counts too, with what the worker
    -- measured of it (see the completion's `used` in complete_jobs).
    INSERT INTO usage_ledger AS l (owner_service, hour, model_profile, slot, attempts,
                                   prompt_tokens, completion_tokens, audio_seconds,
                                   provider_seconds)
    SELECT owner_service, date_trunc('hour', now(), 'UTC'), model_profile,
           hashtext(:worker_id) & 7, 1, CAST(:prompt_tokens AS bigint),
           CAST(:completion_tokens AS bigint), CAST(:audio_seconds AS float8),
           CAST(:provider_seconds AS float8)
    FROM changed
    ON CONFLICT (owner_service, hour, model_profile, slot) DO UPDATE SET
        attempts = l.attempts + excluded.attempts,
        prompt_tokens = l.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = l.completion_tokens + excluded.completion_tokens,
        audio_seconds = l.audio_seconds + excluded.audio_seconds,
        provider_seconds = l.provider_seconds + excluded.provider_seconds
)
SELECT * FROM changed;

-- name: defer_job
-- Backpressure from the provider is not the job's fault: the attempt is given back, up to a
-- bounded number of deferrals after which the job fails rather than circulating for ever.
WITH changed AS (
    UPDATE jobs SET
        status = CASE WHEN deferrals < :max_deferrals THEN 'pending' ELSE 'failed' END,
        attempts = CASE WHEN deferrals < :max_deferrals THEN attempts - 1 ELSE attempts END,
        run_after = CASE WHEN deferrals < :max_deferrals
            THEN now() + make_interval(secs => coalesce(CAST(:retry_after AS float8),
                least(:backoff_max, :backoff_base * power(2, greatest(attempts - 1, 0)))
                * (0.5 + random() * 0.5)))
            ELSE run_after END,
        finished_at = CASE WHEN deferrals < :max_deferrals THEN NULL ELSE now() END,
        deferrals = deferrals + 1,
        error_category = :category, error_message = :message,
        lease_expires_at = NULL, updated_at = now()
    WHERE id = :id AND status = 'running' AND lease_token = :lease_token
      AND worker_id = :worker_id
    RETURNING *
), logged AS (
    INSERT INTO job_events (job_id, event, status, worker_id, attempt, error_category, message)
    SELECT id, CASE WHEN status = 'pending' THEN 'deferred' ELSE 'failed' END, status,
           worker_id, attempts, error_category, left(error_message, 1000) FROM changed
), used AS (
    -- The usage ledger: a failed or deferred attempt counts too, with what the worker
    -- measured of it (see the completion's `used` in complete_jobs).
    INSERT INTO usage_ledger AS l (owner_service, hour, model_profile, slot, attempts,
                                   prompt_tokens, completion_tokens, audio_seconds,
                                   provider_seconds)
    SELECT owner_service, date_trunc('hour', now(), 'UTC'), model_profile,
           hashtext(:worker_id) & 7, 1, CAST(:prompt_tokens AS bigint),
           CAST(:completion_tokens AS bigint), CAST(:audio_seconds AS float8),
           CAST(:provider_seconds AS float8)
    FROM changed
    ON CONFLICT (owner_service, hour, model_profile, slot) DO UPDATE SET
        attempts = l.attempts + excluded.attempts,
        prompt_tokens = l.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = l.completion_tokens + excluded.completion_tokens,
        audio_seconds = l.audio_seconds + excluded.audio_seconds,
        provider_seconds = l.provider_seconds + excluded.provider_seconds
)
SELECT * FROM changed;

-- name: heartbeat_jobs
-- Renews the leases still held and answers their (id, lease token) pairs: a worker may hold a
-- job's new attempt while its old attempt winds down, and only the attempt named by its token
-- is renewed. A heartbeat is no transition: it logs no event.
UPDATE jobs SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS uuid[])) AS held(id, lease_token)
WHERE jobs.id = held.id AND jobs.lease_token = held.lease_token
  AND jobs.status = 'running' AND jobs.worker_id = :worker_id
RETURNING jobs.id, jobs.lease_token;

-- name: release_jobs
-- Shutdown: what did not finish goes back to pending at once, and the attempt does not count.
WITH changed AS (
    UPDATE jobs SET status = 'pending', attempts = greatest(jobs.attempts - 1, 0),
        run_after = now(), lease_expires_at = NULL, updated_at = now()
    FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS uuid[])) AS held(id, lease_token)
    WHERE jobs.id = held.id AND jobs.lease_token = held.lease_token
      AND jobs.status = 'running' AND jobs.worker_id = :worker_id
    RETURNING jobs.*
), logged AS (
    INSERT INTO job_events (job_id, event, status, worker_id, attempt, error_category, message)
    SELECT id, 'released', status, worker_id, attempts, error_category,
           left(error_message, 1000) FROM changed
)
SELECT id FROM changed;

-- name: sweep_lock
-- Every web and worker process runs a sweeper (ai_service/sweeper.py); this transaction-scoped
-- advisory lock, taken first, lets one of them sweep at a time and the others skip that round
-- rather than wait.
SELECT pg_try_advisory_xact_lock(hashtextextended('ai_service.sweep', 0));

-- name: expire_exhausted_leases
-- The sweep: expired leases with no attempts left fail instead of being handed out for ever,
-- whether or not anyone claims.
WITH changed AS (
    UPDATE jobs SET status = 'failed', error_category = 'lease_expired',
        error_message = 'the worker holding the job stopped renewing its lease',
        finished_at = now(), updated_at = now(), lease_expires_at = NULL
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status = 'running' AND lease_expires_at <= now() AND attempts >= max_attempts
        FOR UPDATE SKIP LOCKED)
    RETURNING *
), logged AS (
    INSERT INTO job_events (job_id, event, status, worker_id, attempt, error_category, message)
    SELECT id, 'lease_expired', status, worker_id, attempts, error_category,
           left(error_message, 1000) FROM changed
), abandoned_counted AS (
    -- The attempt the lease ended was never reported (its worker died): the usage ledger
    -- counts it, its usage unknown, in the slot of the worker that held it.
    INSERT INTO usage_ledger AS l (owner_service, hour, model_profile, slot, attempts)
    SELECT owner_service, date_trunc('hour', now(), 'UTC'), model_profile,
           hashtext(coalesce(worker_id, '')) & 7 AS slot, count(*)
    FROM changed
    GROUP BY 1, 3, 4
    ORDER BY 1, 3, 4
    ON CONFLICT (owner_service, hour, model_profile, slot) DO UPDATE SET
        attempts = l.attempts + excluded.attempts
)
SELECT * FROM changed;

-- name: expire_overdue_jobs
-- The sweep: pending jobs past their deadline expire, a batch at a time, found through
-- ix_jobs_pending_deadline (only pending jobs with a deadline are in it). The claim already
-- passes them by; this gives them their final status, event and notices. A job a claim holds
-- right now is skipped: it is being claimed before its deadline, or the next sweep takes it.
WITH changed AS (
    UPDATE jobs SET status = 'expired', finished_at = now(), updated_at = now()
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status = 'pending' AND deadline IS NOT NULL AND deadline <= now()
        ORDER BY deadline
        LIMIT :batch_size
        FOR UPDATE SKIP LOCKED)
    RETURNING *
), logged AS (
    INSERT INTO job_events (job_id, event, status, worker_id, attempt, error_category, message)
    SELECT id, 'expired', status, worker_id, attempts, error_category,
           'still pending when its deadline passed' FROM changed
)
SELECT * FROM changed;

-- name: cancel_job
-- Cancel answers the job's new state and, when it was running, the lease token of the attempt
-- it ended (`stopped_lease_token`), so the worker running it can be told to stop that attempt
-- and no other. The row is locked first: the token read is the one being replaced.
WITH prior AS (
    SELECT id, status, lease_token FROM jobs
    WHERE id = :id AND status IN ('pending', 'running')
      AND (CAST(:scope AS text[]) IS NULL OR owner_service = ANY(CAST(:scope AS text[])))
    FOR UPDATE
), changed AS (
    UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now(),
        lease_expires_at = NULL
    FROM prior WHERE jobs.id = prior.id
    RETURNING jobs.*, CASE WHEN prior.status = 'running' THEN prior.lease_token END
        AS stopped_lease_token
), logged AS (
    INSERT INTO job_events (job_id, event, status, worker_id, attempt, error_category, message)
    SELECT id, 'cancelled', status, worker_id, attempts, error_category,
           left(error_message, 1000) FROM changed
)
SELECT * FROM changed;

-- name: retry_job
-- Back to pending with attempts reset, answering the stopped attempt's token as cancel_job
-- does. A new lease token is not handed out here; clearing the old one fences a worker still
-- running the previous attempt.
WITH prior AS (
    SELECT id, status, lease_token FROM jobs
    WHERE id = :id AND status IN ('failed', 'cancelled', 'running')
      AND (CAST(:scope AS text[]) IS NULL OR owner_service = ANY(CAST(:scope AS text[])))
    FOR UPDATE
), changed AS (
    UPDATE jobs SET status = 'pending', attempts = 0, deferrals = 0, run_after = now(),
        result = NULL, error_category = NULL, error_message = NULL, worker_id = NULL,
        lease_token = NULL, lease_expires_at = NULL, started_at = NULL, finished_at = NULL,
        updated_at = now()
    FROM prior WHERE jobs.id = prior.id
    RETURNING jobs.*, CASE WHEN prior.status = 'running' THEN prior.lease_token END
        AS stopped_lease_token
), logged AS (
    INSERT INTO job_events (job_id, event, status, worker_id, attempt, error_category, message)
    SELECT id, 'retried', status, worker_id, attempts, error_category,
           left(error_message, 1000) FROM changed
)
SELECT * FROM changed;

-- name: prune_batch
-- Retention: one small batch of old finished jobs per transaction. Claims lock only pending
-- and running rows, and SKIP LOCKED leaves alone a finished job someone is retrying right now,
-- so pruning never makes a claim wait. Events go with their job, in the same statement: a job
-- locked here gets no new event, since only a statement that changes the job writes one.
-- A job whose webhook deliveries are still pending stays until they are delivered or failed
-- (a retry still renders its message from the job); its finished deliveries and its
-- callback go with it.
WITH doomed AS (
    SELECT id FROM jobs
    WHERE finished_at < now() - make_interval(secs => :older_than)
      AND status IN ('completed', 'failed', 'cancelled', 'expired')
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                      WHERE d.job_id = jobs.id AND d.state = 'pending')
    ORDER BY finished_at
    LIMIT :batch_size
    FOR UPDATE SKIP LOCKED
), events AS (
    DELETE FROM job_events USING doomed WHERE job_events.job_id = doomed.id
), deliveries AS (
    DELETE FROM webhook_deliveries USING doomed WHERE webhook_deliveries.job_id = doomed.id
), callbacks AS (
    DELETE FROM job_callbacks USING doomed WHERE job_callbacks.job_id = doomed.id
), deleted AS (
    DELETE FROM jobs USING doomed WHERE jobs.id = doomed.id
    RETURNING jobs.id
)
SELECT count(*) FROM deleted;

-- name: notify
-- Sent when the transaction commits: once per statement, never per row, since every
-- NOTIFYing commit takes a cluster-wide lock.
SELECT pg_notify(:channel, :payload);

-- name: notify_finished
-- Tells the web processes' long polls that these jobs, changed by this transaction, reached
-- a final state, when it commits: one statement whatever the count, several payloads when the
-- ids would not fit in one (a payload holds at most 7999 bytes), and only the jobs someone
-- waits on (see wait_on_job), so a transaction nobody waits on takes no NOTIFY lock.
SELECT pg_notify(:channel, string_agg(CAST(id AS text), ','))
FROM (SELECT id, (row_number() OVER () - 1) / CAST(:ids_per_notice AS int) AS part
      FROM jobs WHERE id = ANY(CAST(:ids AS uuid[])) AND waited_until > now()) AS finished
GROUP BY part;

-- name: wait_on_job
-- A long poll marks the unfinished job it waits on until its deadline, and reads it, in one
-- statement. Every statement that finishes a job reads waited_until from the row it changes:
-- a finish already under way holds the row, so this waits for it and then matches nothing
-- (the caller reads the final job); one that comes after sees the mark. Waiting is no change
-- of the job: updated_at and the audit trail stay as they are.
UPDATE jobs SET waited_until = greatest(waited_until, now() + make_interval(secs => :seconds))
WHERE id = :id AND status IN ('pending', 'running')
  AND (CAST(:scope AS text[]) IS NULL OR owner_service = ANY(CAST(:scope AS text[])))
RETURNING *;
