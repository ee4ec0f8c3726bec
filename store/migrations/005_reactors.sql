-- 005: where the reactors of each projection are (processor/projector: Go code run for the events
-- the projection's live version has committed, never for what a replay applies).
--
-- The events a projection's reactors may react to are the ones its live version has committed:
-- the live version's checkpoints are that bound, so nothing else is recorded for it. A promotion
-- or a rollback only ever moves to a version at or past the live one (store/swap.go), so the bound
-- never goes back, and what the new live version applied while it was a replay is reacted to
-- once it is live, with no gap. done is how far the reactors have gone: the next offset they react
-- to, per partition. One instance at a time reacts for a projection (an advisory lock), from done
-- up to the live checkpoints, and moves done (compare and set) after reacting: at least once.
CREATE TABLE kreplay.reactions (
    projection text NOT NULL REFERENCES kreplay.projections (name),
    topic      text NOT NULL,
    partition  integer NOT NULL,
    done       bigint NOT NULL,            -- the next offset the reactors react to
    reacted    bigint NOT NULL DEFAULT 0,  -- events handed to the reactors (each once, bar crashes)
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);
