-- The pixel size of what came back (read from the first image's own header), which can
-- differ from what was asked: history reports it. NULL on generations made before.
ALTER TABLE generations ADD COLUMN width INTEGER;
ALTER TABLE generations ADD COLUMN height INTEGER;
