//! The synthetic image provider behind test keys: a deterministic PNG drawn from the
//! prompt, size, style and the image's index in the request, with no network.
//!
//! Same inputs, same bytes, on every platform (integer arithmetic only). The picture is a
//! vertical gradient with discs and bars whose colours and places come from SHA-256 of
//! the inputs; `artistic` uses more, more saturated shapes and diagonal bands. Every row
//! is a handful of solid spans, which the PNG encoder turns into a small file quickly.

use hmac_sha256::Hash as Sha256;

pub struct SyntheticSpec<'a> {
    pub prompt: &'a str,
    pub width: u32,
    pub height: u32,
    pub artistic: bool,
    /// Index of the image within one request (0..n), so n images differ.
    pub index: u32,
    /// One digest of every input image's bytes (`generate::inputs::digest`), for edits:
    /// the same inputs draw the same picture, a different input a different one.
    pub inputs: Option<[u8; 32]>,
}

pub fn render_png(spec: &SyntheticSpec) -> Vec<u8> {
    let scene = Scene::new(spec);
    let (width, height) = (spec.width, spec.height);
    crate::png::encode_rgb_sub_filtered(width, height, |y, filtered| scene.filtered_row(y, width, height, filtered))
}

#[derive(Clone, Copy)]
enum Shape {
    Disc {
        cx: i64,
        cy: i64,
        r: i64,
        color: [u8; 3],
    },
    Bar {
        x0: i64,
        y0: i64,
        x1: i64,
        y1: i64,
        color: [u8; 3],
    },
    /// A band slanting right by one pixel per row.
    Band {
        offset: i64,
        width: i64,
        color: [u8; 3],
    },
}

struct Scene {
    top: [u8; 3],
    bottom: [u8; 3],
    shapes: Vec<Shape>,
}

/// A deterministic stream of bytes from SHA-256 in counter mode.
struct Stream {
    seed: [u8; 32],
    counter: u32,
    block: [u8; 32],
    used: usize,
}

impl Stream {
    fn new(seed: [u8; 32]) -> Self {
        Stream { seed, counter: 0, block: [0; 32], used: 32 }
    }

    fn byte(&mut self) -> u8 {
        if self.used == 32 {
            let mut hasher = Sha256::new();
            hasher.update(self.seed);
            hasher.update(self.counter.to_be_bytes());
            self.block = hasher.finalize();
            self.counter += 1;
            self.used = 0;
        }
        self.used += 1;
        self.block[self.used - 1]
    }

    /// A value in 0..bound (bound > 0).
    fn below(&mut self, bound: u32) -> u32 {
        let v = u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()]);
        v % bound.max(1)
    }

    fn color(&mut self, saturated: bool) -> [u8; 3] {
        let mut c = [self.byte(), self.byte(), self.byte()];
        if saturated {
            // Push one channel up and one down for a vivid colour.
            let hi = self.below(3) as usize;
            c[hi] = 200 + self.byte() % 56;
            c[(hi + 1) % 3] /= 4;
        }
        c
    }
}

impl Scene {
    fn new(spec: &SyntheticSpec) -> Scene {
        let mut hasher = Sha256::new();
        for part in
            [spec.prompt.as_bytes(), &spec.width.to_be_bytes(), &spec.height.to_be_bytes(), &spec.index.to_be_bytes()]
        {
            hasher.update((part.len() as u32).to_be_bytes());
            hasher.update(part);
        }
        hasher.update([u8::from(spec.artistic)]);
        // Only when there are inputs, so every text-only picture stays what it was.
        if let Some(inputs) = spec.inputs {
            hasher.update(b"inputs");
            hasher.update(inputs);
        }
        let mut rng = Stream::new(hasher.finalize());

        let (w, h) = (i64::from(spec.width), i64::from(spec.height));
        let min_side = w.min(h).max(1);
        let top = rng.color(spec.artistic);
        let bottom = rng.color(false);
        let count = if spec.artistic { 9 + rng.below(6) } else { 3 + rng.below(4) };
        let mut shapes = Vec::with_capacity(count as usize + 3);
        for _ in 0..count {
            let color = rng.color(spec.artistic);
            if rng.below(3) == 0 {
                let x0 = i64::from(rng.below(spec.width));
                let y0 = i64::from(rng.below(spec.height));
                let bw = i64::from(rng.below((min_side / 3) as u32)) + min_side / 16;
                let bh = i64::from(rng.below((min_side / 3) as u32)) + min_side / 16;
                shapes.push(Shape::Bar { x0, y0, x1: x0 + bw, y1: y0 + bh, color });
            } else {
                let r = i64::from(rng.below((min_side / 5) as u32)) + min_side / 20 + 1;
                let cx = i64::from(rng.below(spec.width));
                let cy = i64::from(rng.below(spec.height));
                shapes.push(Shape::Disc { cx, cy, r, color });
            }
        }
        if spec.artistic {
            for _ in 0..3 {
                let offset = i64::from(rng.below(spec.width + spec.height)) - h;
                let width = i64::from(rng.below((min_side / 8) as u32)) + 4;
                shapes.push(Shape::Band { offset, width, color: rng.color(true) });
            }
        }
        Scene { top, bottom, shapes }
    }

    /// Row `y`, Sub-filtered, from its spans: the first pixel of each span differs from the
    /// pixel to its left, every other byte is zero. Work per row is per span, not per pixel
    /// (a 4K image is 16 million pixels). Byte for byte what `draw_row` + the filter give.
    fn filtered_row(&self, y: u32, width: u32, height: u32, out: &mut [u8]) {
        out.fill(0);
        let mut left = [0u8; 3];
        for (start, color) in self.spans(y, width, height) {
            let at = start * 3;
            for channel in 0..3 {
                out[at + channel] = color[channel].wrapping_sub(left[channel]);
            }
            left = color;
        }
    }

    /// Row `y` as (first pixel, colour) spans in order, covering the row: the background,
    /// then each shape painted over what is there, as `draw_row` paints them.
    fn spans(&self, y: u32, width: u32, height: u32) -> Vec<(usize, [u8; 3])> {
        let t = u64::from(y) * 256 / u64::from(height.max(1));
        let blend = |top: u8, bottom: u8| ((u64::from(top) * (256 - t) + u64::from(bottom) * t) / 256) as u8;
        let background = [0, 1, 2].map(|c| blend(self.top[c], self.bottom[c]));
        let w = i64::from(width);
        let mut segments: Vec<(i64, i64, [u8; 3])> = vec![(0, w, background)];
        let mut paint = |from: i64, to: i64, color: [u8; 3]| {
            if to <= from {
                return;
            }
            let mut painted = Vec::with_capacity(segments.len() + 2);
            painted.extend(segments.iter().filter(|s| s.0 < from).map(|&(s, e, c)| (s, e.min(from), c)));
            painted.push((from, to, color));
            painted.extend(segments.iter().filter(|s| s.1 > to).map(|&(s, e, c)| (s.max(to), e, c)));
            segments = painted;
        };
        let y = i64::from(y);
        for shape in &self.shapes {
            match *shape {
                Shape::Disc { cx, cy, r, color } => {
                    let dy = y - cy;
                    if dy.abs() <= r {
                        let half = isqrt(r * r - dy * dy);
                        paint((cx - half).clamp(0, w), (cx + half + 1).clamp(0, w), color);
                    }
                }
                Shape::Bar { x0, y0, x1, y1, color } => {
                    if (y0..y1).contains(&y) {
                        paint(x0.clamp(0, w), x1.clamp(0, w), color);
                    }
                }
                Shape::Band { offset, width: band, color } => {
                    let start = offset + y;
                    paint(start.clamp(0, w), (start + band).clamp(0, w), color);
                }
            }
        }
        segments.into_iter().filter(|s| s.1 > s.0).map(|(s, _, c)| (s as usize, c)).collect()
    }

    #[cfg(test)]
    fn draw_row(&self, y: u32, width: u32, height: u32, row: &mut [u8]) {
        let t = u64::from(y) * 256 / u64::from(height.max(1));
        let blend = |top: u8, bottom: u8| ((u64::from(top) * (256 - t) + u64::from(bottom) * t) / 256) as u8;
        let background = [0, 1, 2].map(|c| blend(self.top[c], self.bottom[c]));
        fill(row, 0, i64::from(width), background);
        let y = i64::from(y);
        let w = i64::from(width);
        for shape in &self.shapes {
            match *shape {
                Shape::Disc { cx, cy, r, color } => {
                    let dy = y - cy;
                    if dy.abs() <= r {
                        let half = isqrt(r * r - dy * dy);
                        fill(row, (cx - half).clamp(0, w), (cx + half + 1).clamp(0, w), color);
                    }
                }
                Shape::Bar { x0, y0, x1, y1, color } => {
                    if (y0..y1).contains(&y) {
                        fill(row, x0.clamp(0, w), x1.clamp(0, w), color);
                    }
                }
                Shape::Band { offset, width: band, color } => {
                    let start = offset + y;
                    fill(row, start.clamp(0, w), (start + band).clamp(0, w), color);
                }
            }
        }
    }
}

/// Paints pixels `from..to` of an RGB row.
#[cfg(test)]
fn fill(row: &mut [u8], from: i64, to: i64, color: [u8; 3]) {
    if to <= from {
        return;
    }
    let (from, to) = (from as usize * 3, to as usize * 3);
    if let Some(span) = row.get_mut(from..to) {
        for pixel in span.chunks_exact_mut(3) {
            pixel.copy_from_slice(&color);
        }
    }
}

fn isqrt(n: i64) -> i64 {
    if n <= 0 {
        return 0;
    }
    let mut x = (n as f64).sqrt() as i64;
    // Correct the float estimate so the result is exact on every platform.
    while x * x > n {
        x -= 1;
    }
    while (x + 1) * (x + 1) <= n {
        x += 1;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(prompt: &str, w: u32, h: u32, artistic: bool, index: u32) -> SyntheticSpec<'_> {
        SyntheticSpec { prompt, width: w, height: h, artistic, index, inputs: None }
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::hash(bytes))
    }

    #[test]
    fn same_inputs_same_bytes() {
        let a = render_png(&spec("a banana on the moon", 64, 48, false, 0));
        let b = render_png(&spec("a banana on the moon", 64, 48, false, 0));
        assert_eq!(a, b);
    }

    #[test]
    fn any_input_change_changes_the_image() {
        let base = render_png(&spec("a banana", 64, 64, false, 0));
        for other in [
            spec("a banana!", 64, 64, false, 0),
            spec("a banana", 64, 48, false, 0),
            spec("a banana", 64, 64, true, 0),
            spec("a banana", 64, 64, false, 1),
            SyntheticSpec { inputs: Some([7; 32]), ..spec("a banana", 64, 64, false, 0) },
        ] {
            assert_ne!(render_png(&other), base);
        }
        let edit = |digest| render_png(&SyntheticSpec { inputs: Some(digest), ..spec("a banana", 64, 64, false, 0) });
        assert_eq!(edit([7; 32]), edit([7; 32]), "same inputs, same picture");
        assert_ne!(edit([7; 32]), edit([8; 32]), "a different input, a different picture");
    }

    #[test]
    fn has_the_requested_dimensions() {
        for (w, h) in [(1024, 1024), (1536, 1024), (1024, 1792), (1, 1)] {
            let png = render_png(&spec("x", w, h, true, 0));
            assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), w);
            assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), h);
        }
    }

    #[test]
    fn a_1024_square_is_small() {
        let png = render_png(&spec("a cat in a hat", 1024, 1024, true, 0));
        assert!(png.len() < 200_000, "{} bytes", png.len());
        if let Ok(path) = std::env::var("NB_WRITE_SAMPLE") {
            std::fs::write(path, &png).unwrap();
        }
    }

    /// The span path writes exactly what painting every pixel and filtering gives.
    #[test]
    fn spans_encode_exactly_what_painting_every_pixel_gives() {
        for (prompt, w, h, artistic, index) in [
            ("a banana", 64, 48, false, 0),
            ("x", 97, 131, true, 2),
            ("a cat in a hat", 300, 200, true, 1),
            ("y", 1, 1, false, 0),
        ] {
            let spec = spec(prompt, w, h, artistic, index);
            let scene = Scene::new(&spec);
            let painted = crate::png::encode_rgb(w, h, |y, row| scene.draw_row(y, w, h, row));
            assert_eq!(render_png(&spec), painted, "{prompt} {w}x{h}");
        }
    }

    /// tests/wasm.rs pins the same value: the wasm build draws the same bytes as native.
    #[test]
    fn pinned_output() {
        let png = render_png(&spec("pinned prompt", 96, 64, true, 2));
        assert_eq!(sha(&png), "64d6a7d6393eadfd8247d21abcc63710bfe811612139240640773afe15068322");
    }

    #[test]
    fn isqrt_is_exact() {
        for n in 0..10_000i64 {
            let r = isqrt(n);
            assert!(r * r <= n && (r + 1) * (r + 1) > n, "{n}");
        }
    }

    #[test]
    fn an_independent_decoder_reads_the_images() {
        let spec =
            SyntheticSpec { prompt: "a banana", width: 640, height: 480, artistic: true, index: 1, inputs: None };
        let png = render_png(&spec);
        let mut reader = png::Decoder::new(std::io::Cursor::new(png.as_slice())).read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height, info.color_type), (640, 480, png::ColorType::Rgb));
        pixels.truncate(info.buffer_size());
        assert!(pixels.chunks(3).any(|p| p != &pixels[..3]), "not a blank image");
    }
}
