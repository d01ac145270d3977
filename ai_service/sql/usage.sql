-- The usage ledger's reads (usage_ledger, migration 0013; written by the statements that
-- record an attempt, ai_service/sql/jobs.sql). Every read sums over the slots. An owner's
-- "today" is the UTC day, as the claim's budget check (claim.sql, `exhausted`) reads it.

-- name: usage_report
-- What was used, by period (`:grain`: hour or day, UTC), owner service and model profile,
-- in [:from, :to); `:scope` (a caller token's owner services; NULL: all) and the filters
-- (NULL: any) narrow it. ix_usage_ledger_hour reads only the range asked for.
SELECT date_trunc(CAST(:grain AS text), hour, 'UTC') AS period, owner_service, model_profile,
       sum(attempts)::bigint AS attempts, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       sum(audio_seconds) AS audio_seconds, sum(provider_seconds) AS provider_seconds
FROM usage_ledger
WHERE hour >= CAST(:from AS timestamptz) AND hour < CAST(:to AS timestamptz)
  AND (CAST(:scope AS text[]) IS NULL OR owner_service = ANY(CAST(:scope AS text[])))
  AND (CAST(:owner_service AS text) IS NULL OR owner_service = CAST(:owner_service AS text))
  AND (CAST(:model_profile AS text) IS NULL OR model_profile = CAST(:model_profile AS text))
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;

-- name: usage_budgets
-- The owners with a daily token budget, what they used today and whether that exhausts it:
-- the same rule as the claim's (claim.sql, `exhausted`), so what the answer says is what the
-- claim does.
SELECT o.owner_service, o.daily_tokens,
       coalesce(sum(u.prompt_tokens + u.completion_tokens), 0)::bigint AS tokens_today,
       o.daily_tokens <= coalesce(sum(u.prompt_tokens + u.completion_tokens), 0)
           AS budget_exhausted
FROM owners o
LEFT JOIN usage_ledger u ON u.owner_service = o.owner_service
    AND u.hour >= date_trunc('day', now(), 'UTC')
WHERE o.daily_tokens IS NOT NULL
  AND (CAST(:scope AS text[]) IS NULL OR o.owner_service = ANY(CAST(:scope AS text[])))
  AND (CAST(:owner_service AS text) IS NULL OR o.owner_service = CAST(:owner_service AS text))
GROUP BY o.owner_service, o.daily_tokens
ORDER BY o.owner_service;

-- name: usage_top_owners
-- The operations page: the owner services that used most over the last 24 hours (the hours
-- that began in them), most tokens first, then most provider time.
SELECT owner_service, sum(attempts)::bigint AS attempts,
       sum(prompt_tokens + completion_tokens)::bigint AS tokens,
       sum(audio_seconds) AS audio_seconds, sum(provider_seconds) AS provider_seconds
FROM usage_ledger
WHERE hour >= date_trunc('hour', now() - interval '24 hours', 'UTC')
GROUP BY owner_service
ORDER BY tokens DESC, provider_seconds DESC, owner_service
LIMIT :limit;

-- name: usage_totals
-- The metrics' counters: all time, by owner service and model profile. It reads the whole
-- ledger, whose size is hours × owners × profiles × slots, never the number of jobs.
SELECT owner_service, model_profile, sum(attempts)::bigint AS attempts,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       sum(audio_seconds) AS audio_seconds, sum(provider_seconds) AS provider_seconds
FROM usage_ledger
GROUP BY owner_service, model_profile;
