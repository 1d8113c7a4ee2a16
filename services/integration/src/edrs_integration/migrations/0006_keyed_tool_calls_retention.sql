-- Keyed tool calls expire (EDRS_INTEGRATION_TOOL_CALL_KEY_RETENTION_HOURS): the sweep looks for
-- finished calls by when they finished, and for lost claims by their stale time.
CREATE INDEX keyed_tool_calls_finished ON keyed_tool_calls (finished_at)
    WHERE state IN ('done', 'failed');
CREATE INDEX keyed_tool_calls_lost ON keyed_tool_calls (stale_at) WHERE state = 'running';
