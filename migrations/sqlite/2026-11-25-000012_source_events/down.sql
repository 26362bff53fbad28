ALTER TABLE federated_sources DROP COLUMN events_client;
