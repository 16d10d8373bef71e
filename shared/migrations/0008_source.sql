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

-- When each term ends, as far as the stored sections tell: a term ends for every section at once.
CREATE VIEW term_calendar AS
SELECT term, max(term_end) AS term_end
FROM section
WHERE term_end IS NOT NULL
GROUP BY term;

-- What the scheduler checks: every watched section, except those last seen inactive (cancelled), those
-- retired as gone, and those of a term that has ended. subject and catalog_nbr are the course of a section
-- seen before (the scheduler asks for the whole course at once), NULL for one never seen (looked up by its
-- class number).
DROP VIEW watched_section_freshness;
DROP VIEW sections_to_check;
CREATE VIEW sections_to_check AS
SELECT DISTINCT w.term, w.class_nbr, NULLIF(s.subject, '') AS subject, NULLIF(s.catalog_nbr, '') AS catalog_nbr
FROM watch AS w
LEFT JOIN section AS s USING (term, class_nbr)
WHERE COALESCE(s.class_status, 'A') = 'A'
  AND NOT EXISTS (
      SELECT 1 FROM section_missing AS m
      WHERE m.term = w.term AND m.class_nbr = w.class_nbr AND m.gone_at IS NOT NULL
  )
  AND NOT EXISTS (
      SELECT 1 FROM term_calendar AS t WHERE t.term = w.term AND t.term_end < current_date
  );

CREATE VIEW watched_section_freshness AS
SELECT c.term,
       c.class_nbr,
       GREATEST(s.scraped_at, m.last_missing_at) AS checked_at
FROM sections_to_check AS c
LEFT JOIN section AS s USING (term, class_nbr)
LEFT JOIN section_missing AS m USING (term, class_nbr);
