-- A generation of n > 1 images succeeds with the images that came back: the others are
-- not charged, and are recorded here as JSON [{index, code, message}] (NULL: none failed).
ALTER TABLE generations ADD COLUMN failures TEXT;
