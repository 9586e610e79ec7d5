-- How the output was asked for, whichever way (`size` maps onto both): Gemini's aspect
-- ratio and resolution. NULL on generations made before.
ALTER TABLE generations ADD COLUMN aspect_ratio TEXT;
ALTER TABLE generations ADD COLUMN resolution TEXT;
