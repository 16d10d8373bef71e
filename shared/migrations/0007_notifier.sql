-- Write-ahead batches: each claimed email is rendered and assigned to its provider batch before the call,
-- and kept until it is sent. A retry after any crash or outage re-sends exactly the same batch under the
-- same idempotency key, however the changes were grouped when they came back.
ALTER TABLE notification
    ADD COLUMN batch_key  text,
    ADD COLUMN email      jsonb,
    -- The provider refused this recipient (and named it): settled, never retried.
    ADD COLUMN refused_at timestamptz;
CREATE INDEX notification_unsent_batch_idx ON notification (batch_key) WHERE sent_at IS NULL;

-- The student's list shows a refused email as refused, not as still being sent.
CREATE OR REPLACE VIEW user_notification AS
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
           WHEN n.refused_at IS NOT NULL THEN 'refused'
           WHEN n.delivered_at IS NOT NULL THEN 'delivered'
           WHEN n.sent_at IS NOT NULL THEN 'sent'
           ELSE 'sending'
       END AS status
FROM notification AS n
JOIN watch AS w ON w.id = n.watch_id;
