DROP TABLE processed_messages; DROP TABLE source_fetches; DROP TABLE source_links; DROP TABLE federated_sources;
