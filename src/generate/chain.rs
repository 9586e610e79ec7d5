//! Conversations: a generation that continues an earlier one (`previous_generation_id`)
//! sends Gemini the whole chain, oldest first: each earlier user turn (its text and the
//! earlier images it named) and each model turn (its parts and their `thoughtSignature`s
//! exactly as received, its image read back from R2), then the new turn.
//!
//! The chain is read in one D1 query (a recursive walk of `previous_generation_id`) and
//! checked before anything is reserved: another account's generation is 404, another key
//! mode's is 422 `mode_mismatch`, and a chain past [`MAX_TURNS`] generations or
//! [`MAX_BYTES`] of images to replay is 422 `conversation_too_long`, never truncated.

use super::inputs::{self, InputRecord};
use super::request::Previous;
use super::status::Status;
use crate::auth::KeyMode;
use crate::db::{self, Db};
use crate::error::{ApiError, ApiResult, Code};
use crate::gemini::{Draft, InlineImage, IMAGE_SLOT};
use crate::storage;
use base64::Engine;

/// The most generations in one conversation, the new one included.
pub const MAX_TURNS: usize = 8;
/// The most image bytes a continued request replays (earlier inputs named by generation
/// and earlier answers, plus the new inputs): as base64 they stay under the 20 MB of
/// inline data Gemini takes in one request.
pub const MAX_BYTES: u64 = 14 * 1024 * 1024;

crate::db::row! {
    /// One generation of a chain, with the image of it the next one continued from.
    pub struct ChainRow {
        pub id: String,
        pub user_id: String,
        pub mode: Option<KeyMode>,
        pub status: Status,
        pub prompt: String,
        pub style: String,
        pub inputs: Option<String>,
        pub object_keys: Option<String>,
        pub mime_type: Option<String>,
        pub model_turns: Option<String>,
        pub bytes: Option<i64>,
        pub n: i64,
        pub width: Option<u32>,
        pub height: Option<u32>,
        pub conversation_id: Option<String>,
        /// Which of its images the next generation continued from.
        pub pick: i64,
    }
}

/// A checked chain: the earlier generations, oldest first.
pub struct Chain {
    rows: Vec<ChainRow>,
}

impl Chain {
    /// Reads the chain ending at `previous` and checks it for a new turn of `user_id`'s
    /// key of `mode` that adds `new_bytes` of images.
    pub async fn load(
        db: &Db<'_>,
        user_id: &str,
        mode: KeyMode,
        previous: &Previous,
        new_bytes: u64,
    ) -> ApiResult<Chain> {
        let rows: Vec<ChainRow> = db
            .all(
                db.prepare(
                    "WITH RECURSIVE chain(id, pick, depth) AS (
                         SELECT ?1, ?2, 1
                         UNION ALL
                         SELECT g.previous_generation_id, g.previous_image_index, c.depth + 1
                           FROM chain c JOIN generations g ON g.id = c.id
                          WHERE g.previous_generation_id IS NOT NULL AND c.depth < ?3)
                     SELECT g.id, g.user_id, g.mode, g.status, g.prompt, g.style, g.inputs, g.object_keys, g.mime_type,
                            g.model_turns, g.bytes, g.n, g.width, g.height, g.conversation_id, c.pick
                       FROM chain c JOIN generations g ON g.id = c.id
                      ORDER BY c.depth DESC",
                )
                .bind(&[
                    db::text(&previous.generation_id),
                    db::int(previous.image_index.into()),
                    db::int(MAX_TURNS as i64),
                ])?,
            )
            .await?;
        check(&rows, user_id, mode, new_bytes)?;
        Ok(Chain { rows })
    }

    /// The conversation the new generation joins: its first generation's id.
    pub fn conversation_id(&self) -> &str {
        let first = &self.rows[0];
        first.conversation_id.as_deref().unwrap_or(&first.id)
    }

    /// The pixels of the image continued from, when known (the new image follows its shape
    /// unless the request names one).
    pub fn previous_size(&self) -> Option<(u32, u32)> {
        let last = self.rows.last()?;
        last.width.zip(last.height)
    }

    /// What the replayed turns add to a call, for its cost estimates: bytes of text (each
    /// earlier prompt as sent, each model turn's text) and the sizes of the images (the
    /// earlier inputs named by generation and each image continued from).
    pub fn shape(&self) -> (usize, Vec<crate::metering::Pixels>) {
        let (mut text, mut images) = (0, Vec::new());
        for row in &self.rows {
            text += row.prompt.len() + 64;
            let pick = usize::try_from(row.pick).unwrap_or(0);
            text += turn_of(row, pick).map_or(0, str::len);
            for input in
                inputs::parse_records(row.inputs.as_deref()).iter().filter(|input| input.generation_id.is_some())
            {
                images.push((input.width, input.height));
            }
            images.push((row.width, row.height));
        }
        (text, images)
    }

    /// A digest of every earlier turn (prompt, style, inputs, the image continued from):
    /// what makes a test key's picture depend on the whole chain.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = hmac_sha256::Hash::new();
        for row in &self.rows {
            let pick = row.pick.to_string();
            for part in [row.prompt.as_str(), row.style.as_str(), row.inputs.as_deref().unwrap_or(""), &pick] {
                hasher.update((part.len() as u64).to_be_bytes().as_slice());
                hasher.update(part.as_bytes());
            }
        }
        hasher.finalize()
    }

    /// Pushes the earlier turns into `draft`, reading their images from R2 one turn at a
    /// time. Uploaded inputs of earlier turns are not kept, so not replayed: the model turn
    /// they led to (its image and signatures) is.
    pub async fn write(&self, draft: &mut Draft, bucket: &worker::Bucket) -> ApiResult<()> {
        for row in &self.rows {
            let mode = row.mode.unwrap_or(KeyMode::Live);
            let mut images = Vec::new();
            for input in inputs::parse_records(row.inputs.as_deref()) {
                if let (Some(source), Some(index)) = (&input.generation_id, input.index) {
                    // The source may have been drawn by a key of the other mode: its image
                    // is under that mode's prefix.
                    let key = |mode| storage::object_key(source, index as usize, mode);
                    let other = if mode == KeyMode::Live { KeyMode::Test } else { KeyMode::Live };
                    let bytes = match storage::read(bucket, key(mode)).await? {
                        Some(bytes) => bytes,
                        None => read(bucket, key(other)).await?,
                    };
                    images.push((input.mime_type.clone(), bytes));
                }
            }
            let inline: Vec<InlineImage> =
                images.iter().map(|(mime_type, bytes)| InlineImage { mime_type, bytes }).collect();
            let text = super::request::upstream_text_of(&row.prompt, &row.style);
            draft.push(&crate::gemini::user_turn(&text, &inline));
            drop(images);
            let pick = usize::try_from(row.pick).unwrap_or(0);
            let image = read(bucket, storage::object_key(&row.id, pick, mode)).await?;
            // The turn as Gemini sent it, its image's base64 spliced back in.
            let (head, tail) = turn_of(row, pick).and_then(|turn| turn.split_once(IMAGE_SLOT)).unwrap_or_default();
            draft.push(head);
            draft.push(&base64::engine::general_purpose::STANDARD.encode(&image));
            draft.push(tail);
        }
        Ok(())
    }
}

async fn read(bucket: &worker::Bucket, key: String) -> ApiResult<Vec<u8>> {
    storage::read(bucket, key.clone())
        .await?
        .ok_or_else(|| ApiError::internal(format!("conversation: {key} is gone from R2")))
}

/// The model turn kept for image `pick` of a generation (`model_turns` holds one line per
/// image index, empty for one with none).
fn turn_of(row: &ChainRow, pick: usize) -> Option<&str> {
    row.model_turns.as_deref()?.split('\n').nth(pick).filter(|turn| turn.contains(IMAGE_SLOT))
}

/// Whether a new turn of `user_id`'s key of `mode`, adding `new_bytes` of images, may
/// continue the chain `rows` (oldest first, the generation continued from last).
pub fn check(rows: &[ChainRow], user_id: &str, mode: KeyMode, new_bytes: u64) -> ApiResult<()> {
    let not_found = || {
        ApiError::new(Code::NotFound, "no generation with this previous_generation_id")
            .with_param("previous_generation_id")
    };
    let previous = rows.last().ok_or_else(not_found)?;
    if rows.iter().any(|row| row.user_id != user_id) {
        return Err(not_found());
    }
    let drawn_with = previous.mode.unwrap_or(KeyMode::Live);
    if drawn_with != mode {
        let drawn_with = drawn_with.as_str();
        return Err(ApiError::validation(
            Code::ModeMismatch,
            "previous_generation_id",
            format!("this conversation was drawn with a {drawn_with} key; continue it with a {drawn_with} key"),
        ));
    }
    if previous.status != Status::Succeeded {
        return Err(ApiError::invalid_value(
            "previous_generation_id",
            format!("only a succeeded generation can be continued; this one is {}", previous.status.as_str()),
        ));
    }
    for row in rows {
        let pick = usize::try_from(row.pick).unwrap_or(usize::MAX);
        if !super::render::delivered_indices(row.object_keys.as_deref(), row.n).contains(&pick) {
            return Err(ApiError::validation(
                Code::OutOfRange,
                "previous_image_index",
                format!("{} has no image {pick} to continue from", row.id),
            ));
        }
        if mode == KeyMode::Live && turn_of(row, pick).is_none() {
            return Err(ApiError::invalid_value(
                "previous_generation_id",
                format!("{} cannot be continued: what the model answered was not kept with it", row.id),
            ));
        }
    }
    if rows.len() >= MAX_TURNS {
        return Err(too_long(format!("a conversation has at most {MAX_TURNS} generations")));
    }
    let replayed: u64 = rows
        .iter()
        .map(|row| {
            let referenced = inputs::parse_records(row.inputs.as_deref())
                .iter()
                .filter(|input| input.generation_id.is_some())
                .map(|input| input.bytes)
                .sum::<u64>();
            referenced + u64::try_from(row.bytes.unwrap_or(0)).unwrap_or(0)
        })
        .sum::<u64>()
        + new_bytes;
    if replayed > MAX_BYTES {
        return Err(too_long(format!(
            "a conversation replays at most {MAX_BYTES} bytes of images in one request; this one would replay {replayed}"
        )));
    }
    Ok(())
}

fn too_long(message: String) -> ApiError {
    ApiError::validation(Code::ConversationTooLong, "previous_generation_id", message)
}

/// The bytes of new inputs a request adds.
pub fn bytes_of(records: &[InputRecord]) -> u64 {
    records.iter().map(|input| input.bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, pick: i64) -> ChainRow {
        ChainRow {
            id: id.into(),
            user_id: "u".into(),
            mode: Some(KeyMode::Live),
            status: Status::Succeeded,
            prompt: "p".into(),
            style: "natural".into(),
            inputs: None,
            object_keys: Some(format!(r#"["images/{id}/0","images/{id}/1"]"#)),
            mime_type: Some("image/png".into()),
            model_turns: Some(format!(
                "{{\"role\":\"model\",\"parts\":[{{\"inlineData\":{{\"data\":\"{IMAGE_SLOT}\"}}}}]}},\n"
            )),
            bytes: Some(1_000),
            n: 2,
            width: Some(8),
            height: Some(8),
            conversation_id: None,
            pick,
        }
    }

    fn code(result: ApiResult<()>) -> &'static str {
        result.err().map_or("ok", |err| err.code.as_str())
    }

    #[test]
    fn a_chain_is_the_accounts_own_of_one_mode_and_bounded() {
        let chain = [row("gen_a", 0), row("gen_b", 0)];
        assert_eq!(code(check(&chain, "u", KeyMode::Live, 0)), "ok");
        assert_eq!(code(check(&[], "u", KeyMode::Live, 0)), "not_found");
        assert_eq!(code(check(&chain, "someone else", KeyMode::Live, 0)), "not_found");
        assert_eq!(code(check(&chain, "u", KeyMode::Test, 0)), "mode_mismatch");
        let failed = [ChainRow { status: Status::Failed, ..row("gen_a", 0) }];
        assert_eq!(code(check(&failed, "u", KeyMode::Live, 0)), "invalid_value");
        // Image 1 has no kept turn (the second line is empty); image 2 was never drawn.
        assert_eq!(code(check(&[row("gen_a", 1)], "u", KeyMode::Live, 0)), "invalid_value");
        assert_eq!(code(check(&[row("gen_a", 1)], "u", KeyMode::Test, 0)), "mode_mismatch");
        assert_eq!(code(check(&[row("gen_a", 2)], "u", KeyMode::Live, 0)), "out_of_range");
        let long: Vec<ChainRow> = (0..MAX_TURNS).map(|i| row(&format!("gen_{i}"), 0)).collect();
        assert_eq!(code(check(&long[1..], "u", KeyMode::Live, 0)), "ok", "the new one makes {MAX_TURNS}");
        assert_eq!(code(check(&long, "u", KeyMode::Live, 0)), "conversation_too_long");
        assert_eq!(code(check(&chain, "u", KeyMode::Live, MAX_BYTES)), "conversation_too_long");
        assert_eq!(code(check(&chain, "u", KeyMode::Live, MAX_BYTES - 2_000)), "ok");
    }
}
