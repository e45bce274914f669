DROP TABLE pending_deletions;
DROP TABLE incidents;
DROP TABLE segments;
DROP TABLE sessions;
DROP TABLE streams;
DROP TABLE positions;
DROP TABLE devices;
