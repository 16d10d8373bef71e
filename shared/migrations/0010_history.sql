-- Seat history (issue 8): the seats of each section over time, for the dashboard's sparkline.
--
-- Owned by the detector, which adds a sample in the statement that stores a snapshot (UPSERT_SNAPSHOTS in
-- services/detector/store.py) when the seat counts differ from the section's latest sample, or it has none,
-- or that one is about to age out. `at` is the snapshot's scraped_at, so a redelivered snapshot adds
-- nothing twice. Bounded in the same statement, for the sections it stores: the latest 200 samples, none
-- older than 180 days.
CREATE TABLE section_sample (
    term       text        NOT NULL,
    class_nbr  text        NOT NULL,
    at         timestamptz NOT NULL,
    open_seats integer     NOT NULL,
    enrl_cap   integer     NOT NULL,
    enrl_tot   integer     NOT NULL,
    PRIMARY KEY (term, class_nbr, at)
);

-- What the gateway reads: a read-only view, so it does not read the detector's table itself.
CREATE VIEW section_seat_history AS
SELECT term, class_nbr, at, open_seats, enrl_cap, enrl_tot
FROM section_sample;
