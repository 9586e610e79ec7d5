-- Conversations (issue 23): a generation may continue an earlier one of the same account
-- (previous_generation_id, and which of its images: previous_image_index). conversation_id
-- is the id of the conversation's first generation (its own id when it continues none;
-- NULL on generations older than this migration, which count as their own).
ALTER TABLE generations ADD COLUMN previous_generation_id TEXT;
ALTER TABLE generations ADD COLUMN previous_image_index INTEGER;
ALTER TABLE generations ADD COLUMN conversation_id TEXT;

-- What Gemini answered for each delivered image, to send back when the conversation
-- continues: a JSON array by image index of the model turn's non-thought parts (their
-- text and thoughtSignature exactly as received; the image itself stays in R2), null for
-- an image that did not come back. At most 128 KiB of text and signatures per turn (a
-- turn past that is not kept, and cannot be continued); far under D1's 1 MB row limit.
ALTER TABLE generations ADD COLUMN model_turns TEXT;

-- GET /v1/generations?conversation_id= (the conversation in order).
CREATE INDEX generations_conversation ON generations (conversation_id, created_at) WHERE conversation_id IS NOT NULL;
