-- The provider system (a registered client) whose event messages feed a source's persisted copy:
-- its messages land as copies owned by that source, not as its own writes.
ALTER TABLE federated_sources ADD COLUMN events_client TEXT;
-- How an `always` source is kept in step: `search` (what changed per linked patient, by
-- _lastUpdated) or `bulk` (one Bulk Data Patient/$export of everything it shares, with _since).
ALTER TABLE federated_sources ADD COLUMN sync_mode TEXT NOT NULL DEFAULT 'search';
