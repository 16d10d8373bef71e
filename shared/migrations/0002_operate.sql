-- How fresh the stored state of every watched section is: a read-only view for the scheduler's freshness
-- metric and the operator CLI (`pmc status`), so neither reads another service's tables directly.
-- checked_at: the latest observation (found or not found); NULL while the section was never checked.
CREATE VIEW watched_section_freshness AS
SELECT w.term,
       w.class_nbr,
       GREATEST(s.scraped_at, m.last_missing_at) AS checked_at
FROM (SELECT DISTINCT term, class_nbr FROM watch) AS w
LEFT JOIN section AS s USING (term, class_nbr)
LEFT JOIN section_missing AS m USING (term, class_nbr);

-- The scheduler's last published cycle (owned by the scheduler; one row), shown by `pmc status`.
CREATE TABLE scheduler_cycle (
    id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    check_window bigint NOT NULL,
    sections    integer NOT NULL,
    published   integer NOT NULL,
    duplicates  integer NOT NULL,
    finished_at timestamptz NOT NULL
);
