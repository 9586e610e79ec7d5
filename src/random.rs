//! The platform CSPRNG (WebCrypto in the Worker, the OS natively), and nothing else.

use crate::error::ApiError;

pub fn bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|err| ApiError::internal(format!("getrandom failed: {err}")))?;
    Ok(buf)
}

/// A random UUID v4 (user and key ids; generation ids add `gen_`).
pub fn uuid_v4() -> Result<String, ApiError> {
    let bytes = bytes::<16>()?;
    Ok(uuid::Builder::from_random_bytes(bytes).into_uuid().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_v4_and_distinct() {
        let a = super::uuid_v4().unwrap();
        let b = super::uuid_v4().unwrap();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }
}
