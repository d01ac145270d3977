-- API tokens: created and revoked by the CLI, looked up on every request. Only a token's hash
-- is stored; its first characters (`prefix`) let an operator tell tokens apart.

-- name: insert_token
-- One active token per name (a partial unique index): a second one is a conflict.
INSERT INTO api_tokens (name, role, owner_services, token_hash, prefix)
VALUES (:name, :role, CAST(:owner_services AS text[]), :token_hash, :prefix)
RETURNING id;

-- name: list_tokens
SELECT id, name, role, owner_services, prefix, created_at, revoked_at FROM api_tokens
ORDER BY created_at;

-- name: revoke_token
-- Revokes the active token with this name and ends the page sessions opened with it, in one
-- statement; answers the ids revoked (none or one).
WITH revoked AS (
    UPDATE api_tokens SET revoked_at = now()
    WHERE name = :name AND revoked_at IS NULL
    RETURNING id
), ended AS (
    UPDATE ops_sessions SET ended_at = now()
    WHERE token_id IN (SELECT id FROM revoked) AND ended_at IS NULL
)
SELECT id FROM revoked;

-- name: principal_for
SELECT name, role, owner_services FROM api_tokens
WHERE token_hash = :token_hash AND revoked_at IS NULL;
