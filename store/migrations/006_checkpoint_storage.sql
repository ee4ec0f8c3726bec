-- 006: kreplay.checkpoints is a few rows per version, updated by every batch. An update is HOT
-- (no new index entry) only when the row's page has room for the new version; PostgreSQL makes
-- room by pruning the versions no snapshot can see any more, which it cannot do while a
-- transaction older than them runs (anywhere on the server: every snapshot's xmin is the
-- server's oldest running transaction). Updates that find no room go to new pages with new
-- index entries, which kreplay.advance's scans then read until a vacuum (the leader vacuums the
-- table every 10s: store.VacuumCheckpoints). Pages filled to a tenth leave each row more room
-- (24,000 updates of 8 rows with a snapshot held 40% of the time: 96% HOT instead of 92.5%), and
-- autovacuum, where it runs, visits the table after 100 dead rows instead of 20% of it.
ALTER TABLE kreplay.checkpoints SET (fillfactor = 10, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 100);
