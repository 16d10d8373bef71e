-- What the email provider told us about each email after accepting it (Resend webhooks, applied by the
-- notifier: services/notifier/provider_events.py), and the student's view of their alerts.

-- delivered_at: the recipient's server took it; bounced_at: it bounced for good or the recipient marked
-- it as spam (the address then gets no more email: app_user.email_status). Both keep the provider's time
-- of the first report, so a redelivered webhook changes nothing.
ALTER TABLE notification
    ADD COLUMN delivered_at timestamptz,
    ADD COLUMN bounced_at   timestamptz;

-- Webhooks name an email by the provider's id: each one is a look-up by provider_id.
CREATE INDEX notification_provider_id_idx ON notification (provider_id) WHERE provider_id IS NOT NULL;

-- Read-only: the gateway lists a student's alerts from this view, never from the notifier's table itself.
-- status: 'sending' while claimed and not sent yet, then 'sent', 'delivered' or 'bounced'; 'bounced' wins
-- over 'delivered', since a complaint comes after the email was delivered.
CREATE VIEW user_notification AS
SELECT w.user_id,
       n.watch_id,
       n.kind,
       n.change_key,
       w.term,
       w.class_nbr,
       n.claimed_at,
       n.sent_at,
       n.delivered_at,
       n.bounced_at,
       CASE
           WHEN n.bounced_at IS NOT NULL THEN 'bounced'
           WHEN n.delivered_at IS NOT NULL THEN 'delivered'
           WHEN n.sent_at IS NOT NULL THEN 'sent'
           ELSE 'sending'
       END AS status
FROM notification AS n
JOIN watch AS w ON w.id = n.watch_id;
