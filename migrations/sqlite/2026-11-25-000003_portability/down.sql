DROP TABLE jobs; DROP TABLE imported_origins;
