-- Cancelled sections and waitlists (services/detector/changes.py).
--
-- Like prev_open_seats / prev_instructors, these keep the values the latest snapshot replaced, so a
-- redelivered snapshot (same snapshot_id) reproduces the same cancellation or waitlist opening under the
-- same change_key instead of finding nothing new. NULL in rows stored before: the detector reads the
-- current values in their place (services/detector/store.py).
ALTER TABLE section
    ADD COLUMN prev_class_status text,
    ADD COLUMN prev_wait_cap     integer,
    ADD COLUMN prev_wait_tot     integer;

-- The sections the scheduler asks the scraper to check: every watched one, except those last seen
-- inactive (CLASSSTAT other than A). An inactive section offers nothing and its cancellation is told once,
-- so checking it every interval would only spend the class search's patience. Sections never checked or
-- not found stay in: only a stored state rules one out. A read-only view, so the scheduler does not read
-- the detector's table itself.
CREATE VIEW sections_to_check AS
SELECT DISTINCT w.term, w.class_nbr
FROM watch AS w
WHERE NOT EXISTS (
    SELECT 1 FROM section AS s
    WHERE s.term = w.term AND s.class_nbr = w.class_nbr AND s.class_status <> 'A'
);

-- Freshness is about the sections that are checked: a cancelled section is not checked any more, so its
-- age would only grow and keep the stale-sections alert (and `pmc status`) failing for good.
CREATE OR REPLACE VIEW watched_section_freshness AS
SELECT c.term,
       c.class_nbr,
       GREATEST(s.scraped_at, m.last_missing_at) AS checked_at
FROM sections_to_check AS c
LEFT JOIN section AS s USING (term, class_nbr)
LEFT JOIN section_missing AS m USING (term, class_nbr);
