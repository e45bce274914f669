DROP TABLE playbacks;
ALTER TABLE incidents
    DROP COLUMN open,
    DROP COLUMN alarm,
    DROP COLUMN lat,
    DROP COLUMN lon,
    DROP COLUMN video_state,
    DROP COLUMN video_reason,
    MODIFY source VARCHAR(32) NOT NULL COMMENT 'who reported it, e.g. ''808-alarm'', ''1078-playback'', ''operator''';
