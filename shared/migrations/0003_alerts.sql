-- Per watch, which alerts the student wants (shared/alerts.py: kinds and defaults).
ALTER TABLE watch ADD COLUMN alerts jsonb NOT NULL
    DEFAULT '{"seat_opened": true, "instructor_changed": true, "closed_again": false, "waitlist_opened": false}';
