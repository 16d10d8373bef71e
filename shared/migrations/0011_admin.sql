-- Account settings and the admin's hand on accounts (services/gateway/account_api.py, admin_api.py).

-- default_alerts: the alert choices a student's new watches start with, only the kinds the student chose
-- (NULL: none chosen); kinds left out follow shared/alerts.py's DEFAULT_ALERTS, so a later change of a
-- global default still reaches students who never touched that kind.
-- disabled_at: set by an admin; a disabled student cannot log in and gets no email.
ALTER TABLE app_user
    ADD COLUMN default_alerts jsonb CHECK (jsonb_typeof(default_alerts) = 'object'),
    ADD COLUMN disabled_at    timestamptz;
