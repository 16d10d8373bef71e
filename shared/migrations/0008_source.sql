-- The source boundary (issue 7): course-level checks, sections that go away, terms that end.

-- The term's last day as the class search lists it (TERMENDDATE); NULL where it was not given.
ALTER TABLE section ADD COLUMN term_end date;
-- The scheduler groups the sections it checks by course.
CREATE INDEX section_course_idx ON section (term, subject, catalog_nbr);

-- A section missing in 3 consecutive windows, outside a not-found storm, is retired: gone_at is set once,
-- by the miss that retired it (gone_snapshot_id), so a redelivered miss re-announces the same change under
-- the same name. Found again, the row is deleted (services/detector/store.py) and the section is checked
-- as before.
ALTER TABLE section_missing
    ADD COLUMN gone_at          timestamptz,
    ADD COLUMN gone_snapshot_id text;

-- When each term ends, as far as the stored sections tell (a term ends for every section at once), and
-- whether it has, on Arizona's calendar: ASU's terms end there, and the database's clock may be UTC.
CREATE VIEW term_calendar AS
SELECT term,
       max(term_end) AS term_end,
       max(term_end) < (now() AT TIME ZONE 'America/Phoenix')::date AS ended
FROM section
WHERE term_end IS NOT NULL
GROUP BY term;

-- Every watched section with its course (a section seen before; NULL for one never seen: it is looked up
-- by class number) and why it may not be checked: last seen inactive (cancelled), retired as gone (not
-- listed in 3 consecutive windows), or of a term that has ended. A read-only view, so the scheduler does
-- not read the detector's tables itself.
DROP VIEW watched_section_freshness;
DROP VIEW sections_to_check;
CREATE VIEW watched_section_status AS
SELECT DISTINCT w.term,
       w.class_nbr,
       NULLIF(s.subject, '') AS subject,
       NULLIF(s.catalog_nbr, '') AS catalog_nbr,
       COALESCE(s.class_status, 'A') <> 'A' AS cancelled,
       EXISTS (
           SELECT 1 FROM section_missing AS m
           WHERE m.term = w.term AND m.class_nbr = w.class_nbr AND m.gone_at IS NOT NULL
       ) AS gone,
       EXISTS (SELECT 1 FROM term_calendar AS t WHERE t.term = w.term AND t.ended) AS ended
FROM watch AS w
LEFT JOIN section AS s USING (term, class_nbr);

-- What the scheduler checks every window. Gone sections are looked at again now and then (the scheduler
-- adds them to some windows, services/scheduler/sections.py): one found again is back to normal.
CREATE VIEW sections_to_check AS
SELECT term, class_nbr, subject, catalog_nbr
FROM watched_section_status
WHERE NOT (cancelled OR gone OR ended);

CREATE VIEW watched_section_freshness AS
SELECT c.term,
       c.class_nbr,
       GREATEST(s.scraped_at, m.last_missing_at) AS checked_at
FROM sections_to_check AS c
LEFT JOIN section AS s USING (term, class_nbr)
LEFT JOIN section_missing AS m USING (term, class_nbr);
