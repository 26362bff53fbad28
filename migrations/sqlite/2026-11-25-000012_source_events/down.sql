ALTER TABLE federated_sources DROP COLUMN sync_mode;
ALTER TABLE federated_sources DROP COLUMN events_client;
