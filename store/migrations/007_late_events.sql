-- 007: late events per version. While tailing, the merge of ordering global holds an event for
-- max_lateness at most; an event that still arrives behind one already applied is applied late
-- (out of created_at order, so a replay of the same log orders it differently). Serve adds the
-- count here after the batch that applied them commits; status shows it.
ALTER TABLE kreplay.versions ADD COLUMN late_events bigint NOT NULL DEFAULT 0;
