DROP TABLE stream_leases;
