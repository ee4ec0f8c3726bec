-- 002: the catalog's identity, and commands that expire or are canceled.
-- Applied by `kreplay migrate` and at `serve` start, once (recorded in kreplay.schema_migrations).

-- One row: the installation this catalog belongs to (the config's installation:, set by serve at
-- start) and a random id that tells this catalog from every other one. serve announces both on
-- the status topic; a serve whose catalog is not the one that holds the topics refuses to start.
CREATE TABLE kreplay.installation (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    name       text NOT NULL,
    catalog_id uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO kreplay.installation (name) VALUES ('kreplay');

-- A command is also recorded when it is not run: expired (its deadline had passed when serve
-- read it) or canceled (by the cancel command canceled_by, before it started). Either way its id
-- is taken, so it never runs later.
ALTER TABLE kreplay.commands DROP CONSTRAINT commands_state_check;
ALTER TABLE kreplay.commands ADD CONSTRAINT commands_state_check
    CHECK (state IN ('running', 'done', 'canceled', 'expired'));
ALTER TABLE kreplay.commands ADD COLUMN deadline timestamptz, ADD COLUMN canceled_by text;
