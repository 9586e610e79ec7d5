//! The image types this service accepts and serves, recognised by their magic bytes, never
//! by what a sender declares: PNG, JPEG and WebP. Anything else (an SVG with script, HTML)
//! is refused before it is stored or served.

/// An accepted image type's Content-Type, or None.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// The width and height in pixels that an image's own header declares (PNG IHDR, JPEG
/// start-of-frame, WebP VP8/VP8L/VP8X), or None if the header cannot be read.
pub fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let be16 = |at: usize| Some(u32::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?])));
    let le16 = |at: usize| Some(u32::from(u16::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?])));
    let le24 = |at: usize| Some(u32::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?, *bytes.get(at + 2)?, 0]));
    match sniff(bytes)? {
        "image/png" => {
            let field = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
            (bytes.get(12..16)? == b"IHDR").then_some(())?;
            Some((field(16)?, field(20)?))
        }
        "image/jpeg" => {
            // Walk the marker segments to the first start-of-frame (SOF0..SOF15 but DHT,
            // JPG and DAC, which share the range).
            let mut at = 2;
            loop {
                if *bytes.get(at)? != 0xff {
                    return None;
                }
                let marker = *bytes.get(at + 1)?;
                if (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
                    return Some((be16(at + 7)?, be16(at + 5)?));
                }
                at += 2 + usize::try_from(be16(at + 2)?).ok()?;
            }
        }
        _ => match bytes.get(12..16)? {
            b"VP8 " => Some((le16(26)? & 0x3fff, le16(28)? & 0x3fff)),
            b"VP8L" => {
                let bits = u32::from_le_bytes(bytes.get(21..25)?.try_into().ok()?);
                Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
            }
            b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{dimensions, sniff};

    #[test]
    fn reads_the_size_each_format_declares() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&[0, 0, 6, 0, 0, 0, 3, 64]); // 1536 x 832
        assert_eq!(dimensions(&png), Some((1536, 832)));
        // JPEG: SOI, an APP0 segment of 16 bytes, then SOF0 (height 600, width 800).
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0, 16];
        jpeg.extend_from_slice(&[0; 14]);
        jpeg.extend_from_slice(&[0xff, 0xc0, 0, 17, 8, 0x02, 0x58, 0x03, 0x20, 3]);
        assert_eq!(dimensions(&jpeg), Some((800, 600)));
        // WebP, lossy: the frame header gives 14-bit width and height.
        let mut vp8 = b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0".to_vec();
        vp8.extend_from_slice(&[0, 0, 0, 0x9d, 0x01, 0x2a, 0x00, 0x04, 0x00, 0x03]); // 1024 x 768
        assert_eq!(dimensions(&vp8), Some((1024, 768)));
        // WebP, lossless: width-1 and height-1 in 14 bits each after the signature byte.
        let bits: u32 = 639 | (479 << 14);
        let mut vp8l = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        vp8l.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(dimensions(&vp8l), Some((640, 480)));
        // WebP, extended: 24-bit canvas width-1 and height-1.
        let mut vp8x = b"RIFF\0\0\0\0WEBPVP8X\0\0\0\0\0\0\0\0".to_vec();
        vp8x.extend_from_slice(&[0xff, 0x0f, 0x00, 0xff, 0x07, 0x00]); // 4096 x 2048
        assert_eq!(dimensions(&vp8x), Some((4096, 2048)));
    }

    #[test]
    fn a_truncated_or_foreign_header_has_no_size() {
        assert_eq!(dimensions(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0"), None);
        assert_eq!(dimensions(&[0xff, 0xd8, 0xff, 0xe0, 0, 16]), None);
        assert_eq!(dimensions(&[0xff, 0xd8, 0xff, 0xe0, 0xff, 0xff]), None);
        assert_eq!(dimensions(b"<svg/>"), None);
    }

    #[test]
    fn the_synthetic_images_declare_what_was_asked() {
        let spec = crate::synthetic::SyntheticSpec {
            prompt: "x",
            width: 1792,
            height: 1024,
            artistic: false,
            index: 0,
            inputs: None,
        };
        assert_eq!(dimensions(&crate::synthetic::render_png(&spec)), Some((1792, 1024)));
    }

    #[test]
    fn recognises_the_three_types_by_their_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some("image/png"));
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0, 0, 0x10]), Some("image/jpeg"));
        assert_eq!(sniff(b"RIFF\x24\0\0\0WEBPVP8 "), Some("image/webp"));
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            &b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"[..],
            b"<html>",
            b"GIF89a",
            b"RIFF\x24\0\0\0WAVEfmt ",
            b"\x89PNG",
            b"",
        ] {
            assert_eq!(sniff(bad), None, "{bad:?}");
        }
    }
}
