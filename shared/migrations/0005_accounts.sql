-- Verified addresses and the gateway's single-use account tokens (email verification, password reset).

-- Only verified addresses get alerts. Added as true, then defaulted to false: accounts that predate
-- verification keep their alerts, and the backfill is a catalogue change, not a rewrite of every row.
ALTER TABLE app_user ADD COLUMN email_verified boolean NOT NULL DEFAULT true;
ALTER TABLE app_user ALTER COLUMN email_verified SET DEFAULT false;

-- One row per link the gateway asked the notifier to email. The link carries a nonce signed with
-- SECRET_KEY; only its SHA-256 is stored, so neither this table nor the account stream holds a usable
-- link on its own. Single use: the one statement that spends a token sets used_at where it is NULL.
CREATE TABLE account_token (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    purpose    text NOT NULL CHECK (purpose IN ('verify', 'reset')),
    nonce_hash bytea NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Issuing a token also deletes the user's tokens that expired over a day ago (their signature has expired
-- too, so nothing can name them): the table holds a few rows per user, never a history.
CREATE INDEX account_token_user_idx ON account_token (user_id, expires_at);
