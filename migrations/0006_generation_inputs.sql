-- What a generation was made from (issue 12, editing): a JSON array with one record per
-- reference image, in the order given. Each record names the source generation and index,
-- or the SHA-256 and byte size of uploaded bytes; the bytes themselves are never in D1.
-- NULL on generations drawn from text alone.
ALTER TABLE generations ADD COLUMN inputs TEXT;
