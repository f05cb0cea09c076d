//! Obviously fake values the world hands out: phone numbers, SMS texts, QR payloads and images.
//!
//! Nothing here resembles a real subscriber: numbers carry a `0000` block, images live under
//! `https://sim.invalid/`, and the QR image is a tiny generated PNG.

use flate2::{Compression, Crc, write::ZlibEncoder};
use std::io::Write;

/// A spaced phone number like `+62 812 0000 0417` for the n-th order.
pub(crate) fn phone_number(prefix: &str, n: u64) -> String {
    let operator_block = 810 + n % 50;
    format!("{prefix} {operator_block} 0000 {:04}", n % 10_000)
}

/// The full SMS text carrying an OTP.
pub(crate) fn sms_text(service: &str, code: &str) -> String {
    format!("<#> {code} is your {service} verification code. Do not share it. (sim)")
}

/// A fake QRIS payload string for a deposit.
pub(crate) fn qris_payload(deposit_id: &str, total: i64) -> String {
    format!(
        "00020101021226590013ID.SIM.INVALID0118{deposit_id}5204481253033605405{total}\
         5802ID5912OTPGATE SIM6007JAKARTA6304SIM0"
    )
}

/// A `data:image/png;base64,…` URL of a small black-and-white pattern derived from `text`.
pub(crate) fn qr_data_url(text: &str) -> String {
    format!("data:image/png;base64,{}", base64(&pattern_png(text)))
}

const SIDE: u32 = 21;

fn pattern_png(text: &str) -> Vec<u8> {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    let mut raw = Vec::new();
    for y in 0..SIDE {
        raw.push(0u8); // filter type: none
        for x in 0..SIDE {
            hash = text.bytes().fold(hash ^ u64::from(x * 31 + y), |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
            });
            raw.push(if hash & 1 == 0 { 0 } else { 255 });
        }
    }

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend(SIDE.to_be_bytes());
    header.extend(SIDE.to_be_bytes());
    header.extend([8, 0, 0, 0, 0]); // 8-bit greyscale
    push_chunk(&mut png, b"IHDR", &header);
    push_chunk(&mut png, b"IDAT", &zlib(&raw));
    push_chunk(&mut png, b"IEND", &[]);
    png
}

fn push_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend((data.len() as u32).to_be_bytes());
    let mut crc = Crc::new();
    crc.update(kind);
    crc.update(data);
    png.extend(kind);
    png.extend(data);
    png.extend(crc.sum().to_be_bytes());
}

fn zlib(raw: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(raw);
    encoder.finish().unwrap_or_default()
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn qr_image_is_a_png_data_url() {
        let url = qr_data_url("RO1");
        assert!(url.starts_with("data:image/png;base64,iVBORw0KGgo"));
    }

    #[test]
    fn phone_numbers_are_spaced_and_obviously_fake() {
        assert_eq!(phone_number("+62", 417), "+62 827 0000 0417");
    }
}
