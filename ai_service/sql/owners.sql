-- Owner services' share of the fleet: weight, cap on running jobs, priority ceiling, daily
-- token budget. An owner
-- without a row has the defaults of ai_service/store/owners.py.

-- name: upsert_owner
INSERT INTO owners (owner_service, weight, max_running, max_priority, daily_tokens, updated_at)
VALUES (:owner_service, :weight, :max_running, :max_priority, :daily_tokens, now())
ON CONFLICT (owner_service) DO UPDATE SET
    weight = EXCLUDED.weight, max_running = EXCLUDED.max_running,
    max_priority = EXCLUDED.max_priority, daily_tokens = EXCLUDED.daily_tokens,
    updated_at = now()
RETURNING owner_service, weight, max_running, max_priority, updated_at, daily_tokens;

-- name: list_owners
SELECT owner_service, weight, max_running, max_priority, updated_at, daily_tokens FROM owners
ORDER BY owner_service;

-- name: get_owners
SELECT owner_service, weight, max_running, max_priority, updated_at, daily_tokens FROM owners
WHERE owner_service = ANY(CAST(:owner_services AS text[]));

-- name: capped_owners
SELECT owner_service FROM owners WHERE max_running IS NOT NULL ORDER BY owner_service;
