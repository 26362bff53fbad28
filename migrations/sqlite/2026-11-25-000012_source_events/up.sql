-- The provider system (a registered client) whose event messages feed a source's persisted copy:
-- its messages land as copies owned by that source, not as its own writes.
ALTER TABLE federated_sources ADD COLUMN events_client TEXT;
