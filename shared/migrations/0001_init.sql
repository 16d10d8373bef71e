-- Users, watches, the last known state of each section, notification claims and the dev outbox.

CREATE TABLE app_user (
    id                    bigserial PRIMARY KEY,
    email                 text NOT NULL,
    password_hash         text NOT NULL,
    notifications_enabled boolean NOT NULL DEFAULT true,
    -- 'ok' | 'bounced' | 'complained' | 'rejected' (the provider refused the address): only 'ok' gets email.
    email_status          text NOT NULL DEFAULT 'ok',
    is_admin              boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX app_user_email_key ON app_user (lower(email));

CREATE TABLE watch (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    term       text NOT NULL,
    class_nbr  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, term, class_nbr)
);
CREATE INDEX watch_section_idx ON watch (term, class_nbr);

-- The latest observation of each section. prev_* keep the values the latest snapshot replaced, so a
-- redelivered snapshot (same snapshot_id) reproduces exactly the same transition and nothing more.
CREATE TABLE section (
    term             text NOT NULL,
    class_nbr        text NOT NULL,
    subject          text NOT NULL,
    catalog_nbr      text NOT NULL,
    title            text NOT NULL,
    section          text NOT NULL DEFAULT '',
    component        text NOT NULL DEFAULT '',
    instructors      text[] NOT NULL DEFAULT '{}',
    enrl_cap         integer NOT NULL,
    enrl_tot         integer NOT NULL,
    open_seats       integer NOT NULL,
    wait_cap         integer NOT NULL DEFAULT 0,
    wait_tot         integer NOT NULL DEFAULT 0,
    reserved_seats   boolean NOT NULL DEFAULT false,
    days             text NOT NULL DEFAULT '',
    start_time       text,
    end_time         text,
    location         text NOT NULL DEFAULT '',
    instruction_mode text NOT NULL DEFAULT '',
    class_status     text NOT NULL DEFAULT 'A',
    snapshot_id      text NOT NULL,
    scraped_at       timestamptz NOT NULL,
    prev_open_seats  integer,
    prev_instructors text[],
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (term, class_nbr)
);

-- Sections the class search currently does not list: never found, or found before and gone now.
-- A row lives from the first "not found" until the section is found again; missing_count counts the
-- consecutive misses (a redelivered miss, same snapshot_id, is not counted twice).
CREATE TABLE section_missing (
    term             text NOT NULL,
    class_nbr        text NOT NULL,
    snapshot_id      text NOT NULL,
    missing_count    integer NOT NULL,
    first_missing_at timestamptz NOT NULL,
    last_missing_at  timestamptz NOT NULL,
    PRIMARY KEY (term, class_nbr)
);

-- A claim on one email: (watch, kind, change). Inserted before sending; sent_at set after the provider
-- accepted it. An unsent claim older than the lease may be taken over (its sender died).
CREATE TABLE notification (
    watch_id    bigint NOT NULL REFERENCES watch (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    change_key  text NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    provider_id text,
    PRIMARY KEY (watch_id, kind, change_key)
);
CREATE INDEX notification_sent_idx ON notification (sent_at);

-- Development email backend: messages are stored here and shown at /dev/outbox.
CREATE TABLE outbox_email (
    id         text PRIMARY KEY,
    to_addr    text NOT NULL,
    subject    text NOT NULL,
    text_body  text NOT NULL,
    html_body  text NOT NULL,
    headers    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
