-- The tools a persona may call and its tool policy (docs/integration.md, "Tool use in a turn").
-- tool_policy: {"write": "allowed|required", "destructive": "allowed|required",
--               "max_rounds": 0..8, "choice": "auto|required"}; {} means every default.
ALTER TABLE personas
    ADD COLUMN tools text[] NOT NULL DEFAULT '{}',
    ADD COLUMN tool_policy jsonb NOT NULL DEFAULT '{}';
