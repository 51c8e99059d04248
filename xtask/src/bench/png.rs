//! A minimal PNG writer with no dependencies: 8-bit RGB, each row filtered (Sub or Up,
//! whichever leaves more zeros), compressed with deflate using the fixed Huffman code and
//! run-length matches only (distances 1 and 3). Plenty for flat-coloured charts.

/// An RGB image.
pub struct Image {
    pub width: usize,
    pub height: usize,
    pixels: Vec<u8>,
}

pub type Rgb = [u8; 3];

impl Image {
    pub fn new(width: usize, height: usize, background: Rgb) -> Self {
        Self {
            width,
            height,
            pixels: background.repeat(width * height),
        }
    }

    pub fn set(&mut self, x: i64, y: i64, color: Rgb) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let at = (y as usize * self.width + x as usize) * 3;
        self.pixels[at..at + 3].copy_from_slice(&color);
    }

    #[cfg(test)]
    pub fn get(&self, x: usize, y: usize) -> Rgb {
        let at = (y * self.width + x) * 3;
        [self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]]
    }

    /// Fills the rectangle [x0, x1) × [y0, y1), clipped to the image.
    pub fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb) {
        for y in y0.max(0)..y1.min(self.height as i64) {
            for x in x0.max(0)..x1.min(self.width as i64) {
                self.set(x, y, color);
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut header = Vec::new();
        header.extend((self.width as u32).to_be_bytes());
        header.extend((self.height as u32).to_be_bytes());
        // Bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
        header.extend([8, 2, 0, 0, 0]);
        chunk(&mut png, b"IHDR", &header);
        chunk(&mut png, b"IDAT", &zlib(&self.filtered()));
        chunk(&mut png, b"IEND", &[]);
        png
    }

    fn filtered(&self) -> Vec<u8> {
        let stride = self.width * 3;
        let mut out = Vec::with_capacity((stride + 1) * self.height);
        let zero_row = vec![0u8; stride];
        for y in 0..self.height {
            let row = &self.pixels[y * stride..(y + 1) * stride];
            let above = if y == 0 {
                &zero_row[..]
            } else {
                &self.pixels[(y - 1) * stride..y * stride]
            };
            let sub: Vec<u8> = (0..stride)
                .map(|i| row[i].wrapping_sub(if i >= 3 { row[i - 3] } else { 0 }))
                .collect();
            let up: Vec<u8> = (0..stride).map(|i| row[i].wrapping_sub(above[i])).collect();
            let zeros = |v: &[u8]| v.iter().filter(|&&b| b == 0).count();
            if zeros(&up) > zeros(&sub) {
                out.push(2);
                out.extend(up);
            } else {
                out.push(1);
                out.extend(sub);
            }
        }
        out
    }
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend((data.len() as u32).to_be_bytes());
    let start = png.len();
    png.extend(kind);
    png.extend(data);
    let crc = crc32(&png[start..]);
    png.extend(crc.to_be_bytes());
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// Bits, least significant first, as deflate packs them.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, count: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code: most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        let reversed = code.reverse_bits() >> (32 - len);
        self.put(reversed, len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// The fixed literal/length code of symbol `sym` (0–287).
fn literal(bits: &mut Bits, sym: u32) {
    match sym {
        0..=143 => bits.code(0x30 + sym, 8),
        144..=255 => bits.code(0x190 + sym - 144, 9),
        256..=279 => bits.code(sym - 256, 7),
        _ => bits.code(0xc0 + sym - 280, 8),
    }
}

const LENGTH_BASE: [u32; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u32; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];

fn length(bits: &mut Bits, len: u32) {
    let i = LENGTH_BASE
        .iter()
        .rposition(|&base| base <= len)
        .unwrap_or(0);
    literal(bits, 257 + i as u32);
    bits.put(len - LENGTH_BASE[i], LENGTH_EXTRA[i]);
}

fn zlib(data: &[u8]) -> Vec<u8> {
    // CMF/FLG: deflate with a 32 KiB window, no dictionary, check bits valid.
    let mut out = vec![0x78, 0x01];
    let mut bits = Bits {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    // One final block with the fixed code.
    bits.put(1, 1);
    bits.put(1, 2);
    let mut i = 0;
    while i < data.len() {
        let mut best = (0usize, 0u32);
        for distance in [1usize, 3] {
            if i < distance {
                continue;
            }
            let mut len = 0;
            while len < 258 && i + len < data.len() && data[i + len] == data[i + len - distance] {
                len += 1;
            }
            if len > best.0 {
                best = (len, distance as u32);
            }
        }
        if best.0 >= 3 {
            length(&mut bits, best.0 as u32);
            // Distance codes 0 (distance 1) and 2 (distance 3): five bits, no extra bits.
            bits.code(best.1 - 1, 5);
            i += best.0;
        } else {
            literal(&mut bits, u32::from(data[i]));
            i += 1;
        }
    }
    literal(&mut bits, 256);
    out.extend(bits.finish());
    out.extend(adler32(data).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    /// A tiny inflater for the fixed-code blocks this module writes, to check the round trip.
    fn inflate_fixed(data: &[u8]) -> Vec<u8> {
        let mut pos = 0usize;
        let bit = |pos: &mut usize| {
            let b = (data[*pos / 8] >> (*pos % 8)) & 1;
            *pos += 1;
            u32::from(b)
        };
        let bits = |pos: &mut usize, n: u32| (0..n).fold(0, |acc, k| acc | (bit(pos) << k));
        let huff = |pos: &mut usize, n: u32| (0..n).fold(0, |acc, _| (acc << 1) | bit(pos));
        assert_eq!(bits(&mut pos, 3), 0b011);
        let mut out: Vec<u8> = Vec::new();
        loop {
            let mut code = huff(&mut pos, 7);
            let sym = if code <= 0x17 {
                code + 256
            } else {
                code = (code << 1) | bit(&mut pos);
                if (0x30..=0xbf).contains(&code) {
                    code - 0x30
                } else if (0xc0..=0xc7).contains(&code) {
                    code - 0xc0 + 280
                } else {
                    code = (code << 1) | bit(&mut pos);
                    code - 0x190 + 144
                }
            };
            match sym {
                0..=255 => out.push(sym as u8),
                256 => return out,
                _ => {
                    let i = (sym - 257) as usize;
                    let len = LENGTH_BASE[i] + bits(&mut pos, LENGTH_EXTRA[i]);
                    let distance = huff(&mut pos, 5) as usize + 1;
                    for _ in 0..len {
                        out.push(out[out.len() - distance]);
                    }
                }
            }
        }
    }

    #[test]
    fn deflate_round_trips() {
        let mut data = vec![7u8; 1000];
        data.extend((0..=255u8).cycle().take(700));
        data.extend([1, 2, 3].repeat(200));
        let z = zlib(&data);
        let inflated = inflate_fixed(&z[2..z.len() - 4]);
        assert_eq!(inflated, data);
        assert!(z.len() < data.len() / 2);
    }

    #[test]
    fn encodes_an_image() {
        let mut image = Image::new(40, 30, [255, 255, 255]);
        image.fill(5, 5, 20, 25, [10, 20, 200]);
        let png = image.encode();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(image.get(10, 10), [10, 20, 200]);
    }
}
