-- Episodes stored without an embedding yet (a turn's reply is embedded after RecordTurn returns;
-- see late_embedding.py): the sweep finds them, oldest first, without reading the table.
CREATE INDEX episodes_unembedded ON episodes (created_at, id) WHERE embedding IS NULL;
