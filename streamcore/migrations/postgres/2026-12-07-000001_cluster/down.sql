DROP TABLE device_nodes;
DROP TABLE ingest_nodes;
