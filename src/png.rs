//! A small PNG encoder for 8-bit RGB images, written for the synthetic provider.
//!
//! Rows use the Sub filter, so a row made of solid spans becomes mostly zeros; the zlib
//! stream is one fixed-Huffman deflate block whose only back-references are runs
//! (distance 1). That is all the synthetic images need, and it keeps a 1024x1024 image
//! to tens of kilobytes and a few milliseconds without a compression crate.

/// Encodes a `width` x `height` RGB image whose rows `draw_row(y, row)` fills
/// (`row.len() == 3 * width`).
pub fn encode_rgb(width: u32, height: u32, mut draw_row: impl FnMut(u32, &mut [u8])) -> Vec<u8> {
    let mut row = vec![0u8; 3 * width as usize];
    encode_rgb_sub_filtered(width, height, |y, filtered| {
        draw_row(y, &mut row);
        for i in 0..row.len() {
            let left = if i >= 3 { row[i - 3] } else { 0 };
            filtered[i] = row[i].wrapping_sub(left);
        }
    })
}

/// [`encode_rgb`] for a caller that writes each row already Sub-filtered (each byte minus
/// the same channel of the pixel to its left): a row of solid spans is then a few
/// differences and zeros, written without touching every pixel (the synthetic provider).
pub fn encode_rgb_sub_filtered(width: u32, height: u32, mut filtered_row: impl FnMut(u32, &mut [u8])) -> Vec<u8> {
    let row_bytes = 3 * width as usize;
    let mut filtered = vec![0u8; row_bytes + 1];
    let mut deflate = Deflater::new();
    let mut adler = Adler32::new();

    for y in 0..height {
        filtered[0] = 1; // filter type: Sub
        filtered_row(y, &mut filtered[1..]);
        adler.update(&filtered);
        deflate.write_runs(&filtered);
    }
    let compressed = deflate.finish();

    let mut idat = Vec::with_capacity(compressed.len() + 6);
    idat.extend_from_slice(&[0x78, 0x01]); // zlib: deflate, 32 KiB window, no dictionary
    idat.extend_from_slice(&compressed);
    idat.extend_from_slice(&adler.finish().to_be_bytes());

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, truecolour, deflate, adaptive filters, no interlace

    let mut png = Vec::with_capacity(idat.len() + 64);
    png.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    write_chunk(&mut png, b"IHDR", &ihdr);
    write_chunk(&mut png, b"IDAT", &idat);
    write_chunk(&mut png, b"IEND", &[]);
    png
}

fn write_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

pub fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (n, entry) in table.iter_mut().enumerate() {
            let mut c = n as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
            *entry = c;
        }
        table
    });
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc = table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc ^ 0xFFFF_FFFF
}

struct Adler32 {
    a: u32,
    b: u32,
}

impl Adler32 {
    fn new() -> Self {
        Adler32 { a: 1, b: 0 }
    }

    fn update(&mut self, bytes: &[u8]) {
        const MOD: u64 = 65_521;
        let (mut a, mut b) = (u64::from(self.a), u64::from(self.b));
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == 0 {
                // A run of zeros leaves `a` as it is and adds it to `b` once per byte.
                let run = bytes[i..].iter().take_while(|&&byte| byte == 0).count();
                b = (b + a * run as u64) % MOD;
                i += run;
            } else {
                a = (a + u64::from(bytes[i])) % MOD;
                b = (b + a) % MOD;
                i += 1;
            }
        }
        (self.a, self.b) = (a as u32, b as u32);
    }

    fn finish(&self) -> u32 {
        (self.b << 16) | self.a
    }
}

/// One fixed-Huffman deflate block (RFC 1951 3.2.6), built from literals and runs.
struct Deflater {
    out: Vec<u8>,
    bit_buffer: u64,
    bit_count: u32,
}

impl Deflater {
    fn new() -> Self {
        let mut d = Deflater { out: Vec::new(), bit_buffer: 0, bit_count: 0 };
        d.bits(1, 1); // BFINAL
        d.bits(1, 2); // BTYPE = 01, fixed Huffman
        d
    }

    /// Appends `count` bits of `value`, least significant first.
    fn bits(&mut self, value: u32, count: u32) {
        self.bit_buffer |= u64::from(value) << self.bit_count;
        self.bit_count += count;
        while self.bit_count >= 8 {
            self.out.push(self.bit_buffer as u8);
            self.bit_buffer >>= 8;
            self.bit_count -= 8;
        }
    }

    /// Huffman codes are defined most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        self.bits(code.reverse_bits() >> (32 - len), len);
    }

    fn literal_or_length_symbol(&mut self, symbol: u32) {
        match symbol {
            0..=143 => self.code(0x30 + symbol, 8),
            144..=255 => self.code(0x190 + symbol - 144, 9),
            256..=279 => self.code(symbol - 256, 7),
            _ => self.code(0xC0 + symbol - 280, 8),
        }
    }

    /// A back-reference of `length` (3..=258) at distance 1: "repeat the last byte".
    fn run(&mut self, length: u32) {
        let (symbol, base, extra) = length_symbol(length);
        self.literal_or_length_symbol(symbol);
        if extra > 0 {
            self.bits(length - base, extra);
        }
        self.code(0, 5); // distance code 0 = distance 1, no extra bits
    }

    /// Writes `bytes` as literals, with each run of a repeated byte as literal + run.
    fn write_runs(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let byte = bytes[i];
            self.literal_or_length_symbol(u32::from(byte));
            let mut repeat = bytes[i + 1..].iter().take_while(|&&b| b == byte).count() as u32;
            i += 1 + repeat as usize;
            while repeat >= 3 {
                // Never leave 1 or 2 behind when they could have joined this match.
                let take = if repeat > 258 && repeat < 261 { repeat - 3 } else { repeat.min(258) };
                self.run(take);
                repeat -= take;
            }
            for _ in 0..repeat {
                self.literal_or_length_symbol(u32::from(byte));
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.literal_or_length_symbol(256); // end of block
        if self.bit_count > 0 {
            self.out.push(self.bit_buffer as u8);
        }
        self.out
    }
}

/// Deflate's length symbols: (symbol, base length, extra bits) for a length of 3..=258.
fn length_symbol(length: u32) -> (u32, u32, u32) {
    const BASES: [u32; 29] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227,
        258,
    ];
    const EXTRA: [u32; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
    let index = BASES.iter().rposition(|&base| base <= length).unwrap_or(0);
    (257 + index as u32, BASES[index], EXTRA[index])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny inflater for fixed-Huffman blocks, enough to check what we write.
    fn inflate_fixed(data: &[u8]) -> Vec<u8> {
        struct Bits<'a> {
            data: &'a [u8],
            pos: usize,
        }
        impl Bits<'_> {
            fn bit(&mut self) -> u32 {
                let b = (self.data[self.pos / 8] >> (self.pos % 8)) & 1;
                self.pos += 1;
                u32::from(b)
            }
            fn bits(&mut self, n: u32) -> u32 {
                (0..n).fold(0, |acc, i| acc | (self.bit() << i))
            }
            fn huff(&mut self, n: u32) -> u32 {
                (0..n).fold(0, |acc, _| (acc << 1) | self.bit())
            }
        }
        let mut r = Bits { data, pos: 0 };
        assert_eq!(r.bits(3), 0b011, "final fixed block");
        let mut out = Vec::new();
        loop {
            let mut code = r.huff(7);
            let symbol = if code <= 0x17 {
                code + 256
            } else {
                code = (code << 1) | r.bit();
                if (0x30..=0xBF).contains(&code) {
                    code - 0x30
                } else if (0xC0..=0xC7).contains(&code) {
                    code - 0xC0 + 280
                } else {
                    ((code << 1) | r.bit()) - 0x190 + 144
                }
            };
            match symbol {
                0..=255 => out.push(symbol as u8),
                256 => break,
                _ => {
                    let idx = (symbol - 257) as usize;
                    let (_, base, extra) = length_symbol(
                        [
                            3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
                            131, 163, 195, 227, 258,
                        ][idx],
                    );
                    let len = base + r.bits(extra);
                    assert_eq!(r.huff(5), 0, "only distance 1 is written");
                    let last = *out.last().unwrap();
                    out.extend(std::iter::repeat_n(last, len as usize));
                }
            }
        }
        out
    }

    fn compress(bytes: &[u8]) -> Vec<u8> {
        let mut d = Deflater::new();
        d.write_runs(bytes);
        d.finish()
    }

    #[test]
    fn runs_of_every_length_round_trip() {
        for len in [1usize, 2, 3, 4, 10, 257, 258, 259, 260, 261, 262, 516, 517, 1000, 5000] {
            let mut data = vec![7u8; len];
            data.push(9);
            data.extend(vec![0u8; len]);
            assert_eq!(inflate_fixed(&compress(&data)), data, "run length {len}");
        }
    }

    #[test]
    fn every_literal_round_trips() {
        let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        assert_eq!(inflate_fixed(&compress(&data)), data);
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn adler32_matches_the_standard_value() {
        let mut a = Adler32::new();
        a.update(b"Wikipedia");
        assert_eq!(a.finish(), 0x11E6_0398);
        let mut big = Adler32::new();
        big.update(&vec![255u8; 100_000]);
        let (mut sa, mut sb) = (1u64, 0u64);
        for _ in 0..100_000 {
            sa = (sa + 255) % 65_521;
            sb = (sb + sa) % 65_521;
        }
        assert_eq!(big.finish(), ((sb << 16) | sa) as u32);
    }

    #[test]
    fn png_structure_and_pixels_round_trip() {
        let (w, h) = (37u32, 5u32);
        let pixel = |x: u32, y: u32| [(x * 7) as u8, (y * 50) as u8, if x > 20 { 255 } else { 3 }];
        let png = encode_rgb(w, h, |y, row| {
            for x in 0..w {
                row[3 * x as usize..3 * x as usize + 3].copy_from_slice(&pixel(x, y));
            }
        });
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), w);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), h);
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
        // IHDR's CRC covers type + data.
        assert_eq!(u32::from_be_bytes(png[29..33].try_into().unwrap()), crc32(&png[12..29]));

        let idat_len = u32::from_be_bytes(png[33..37].try_into().unwrap()) as usize;
        assert_eq!(&png[37..41], b"IDAT");
        let zlib = &png[41..41 + idat_len];
        let raw = inflate_fixed(&zlib[2..zlib.len() - 4]);
        assert_eq!(raw.len(), (h * (1 + 3 * w)) as usize);
        for y in 0..h {
            let line = &raw[(y * (1 + 3 * w)) as usize..((y + 1) * (1 + 3 * w)) as usize];
            assert_eq!(line[0], 1, "Sub filter");
            let mut prev = [0u8; 3];
            for x in 0..w {
                let i = 1 + 3 * x as usize;
                let px = [
                    line[i].wrapping_add(prev[0]),
                    line[i + 1].wrapping_add(prev[1]),
                    line[i + 2].wrapping_add(prev[2]),
                ];
                assert_eq!(px, pixel(x, y), "pixel {x},{y}");
                prev = px;
            }
        }
        let mut adler = Adler32::new();
        adler.update(&raw);
        assert_eq!(u32::from_be_bytes(zlib[zlib.len() - 4..].try_into().unwrap()), adler.finish());
    }

    /// Decodes with the `png` crate (an independent decoder, with its own inflate and CRC
    /// and Adler checks) and compares every pixel.
    fn decode_independently(png: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight));
        pixels.truncate(info.buffer_size());
        (info.width, info.height, pixels)
    }

    #[test]
    fn an_independent_decoder_reads_back_every_pixel() {
        // Long runs (over 258 bytes, the longest deflate match), short runs, noise, and sizes
        // that are not multiples of anything.
        for (w, h) in [(1u32, 1u32), (37, 5), (300, 7), (1024, 3)] {
            let pixel = |x: u32, y: u32| -> [u8; 3] {
                if x < w / 2 {
                    [200, 30, 90]
                } else {
                    let n = x.wrapping_mul(2_654_435_761).wrapping_add(y.wrapping_mul(40_503));
                    [(n >> 24) as u8, (n >> 16) as u8, if x.is_multiple_of(5) { 255 } else { (y * 3) as u8 }]
                }
            };
            let encoded = encode_rgb(w, h, |y, row| {
                for x in 0..w {
                    row[3 * x as usize..3 * x as usize + 3].copy_from_slice(&pixel(x, y));
                }
            });
            let (dw, dh, pixels) = decode_independently(&encoded);
            assert_eq!((dw, dh), (w, h));
            let expected: Vec<u8> = (0..h).flat_map(|y| (0..w).flat_map(move |x| pixel(x, y))).collect();
            assert_eq!(pixels, expected, "{w}x{h}");
        }
    }
}
