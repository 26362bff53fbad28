DROP TABLE closed_records;
