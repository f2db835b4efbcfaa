//! Time-lapse exports: frames (an attention map or the head grid at successive steps) with
//! the step printed under each, as an animated GIF, written whole or not at all.

use crate::store::figure::{register_font, FONT};
use crate::store::run::{write_atomically, RunError};
use image::RgbImage;
use plotters::prelude::*;
use std::path::Path;

/// Height of the caption bar under each frame.
const CAPTION_PX: u32 = 22;

/// Each frame with its caption under it, all padded to the largest frame's size.
pub fn captioned(frames: &[(RgbImage, String)]) -> Result<Vec<RgbImage>, String> {
    let width = frames
        .iter()
        .map(|(f, _)| f.width())
        .max()
        .ok_or("no frames")?;
    let height = frames
        .iter()
        .map(|(f, _)| f.height())
        .max()
        .ok_or("no frames")?;
    // Text needs room: small maps are scaled up by whole pixels.
    let scale = (160 / width.max(1)).max(1);
    let (w, h) = (width * scale, height * scale + CAPTION_PX);
    register_font();
    frames
        .iter()
        .map(|(frame, label)| {
            let scaled = image::imageops::resize(
                frame,
                frame.width() * scale,
                frame.height() * scale,
                image::imageops::FilterType::Nearest,
            );
            let mut buffer = vec![0u8; (w * h * 3) as usize];
            for (x, y, pixel) in scaled.enumerate_pixels() {
                let at = ((y * w + x) * 3) as usize;
                buffer[at..at + 3].copy_from_slice(&pixel.0);
            }
            {
                let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
                let style = TextStyle::from((FONT, 16)).color(&WHITE);
                root.draw_text(label, &style, (4, (height * scale + 3) as i32))
                    .map_err(|e| e.to_string())?;
                root.present().map_err(|e| e.to_string())?;
            }
            RgbImage::from_raw(w, h, buffer).ok_or_else(|| "bitmap size mismatch".to_string())
        })
        .collect()
}

/// An animated GIF of `frames` (each shown `delay_ms`, looping), captioned.
pub fn write_gif(
    path: &Path,
    frames: &[(RgbImage, String)],
    delay_ms: u32,
) -> Result<(), RunError> {
    let error = |reason: String| RunError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(reason),
    };
    let captioned = captioned(frames).map_err(error)?;
    let mut bytes = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(&mut bytes, 10);
        encoder
            .set_repeat(image::codecs::gif::Repeat::Infinite)
            .map_err(|e| error(e.to_string()))?;
        let delay = image::Delay::from_numer_denom_ms(delay_ms, 1);
        for frame in captioned {
            let rgba = image::DynamicImage::ImageRgb8(frame).into_rgba8();
            encoder
                .encode_frame(image::Frame::from_parts(rgba, 0, 0, delay))
                .map_err(|e| error(e.to_string()))?;
        }
    }
    write_atomically(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_become_a_looping_gif_with_captions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gif");
        let frames: Vec<(RgbImage, String)> = (0..3)
            .map(|i| {
                (
                    RgbImage::from_pixel(32, 24, image::Rgb([80 * i as u8, 40, 200])),
                    format!("step {}", 10 * i),
                )
            })
            .collect();
        write_gif(&path, &frames, 200).unwrap();
        let decoder = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
            std::fs::File::open(&path).unwrap(),
        ))
        .unwrap();
        use image::AnimationDecoder;
        let decoded = decoder.into_frames().collect_frames().unwrap();
        assert_eq!(decoded.len(), 3);
        // Scaled ×5 to 160 wide, the caption bar under it with ink in it.
        let first = decoded[0].buffer();
        assert_eq!(first.dimensions(), (160, 24 * 5 + CAPTION_PX));
        let ink = (24 * 5..24 * 5 + CAPTION_PX)
            .flat_map(|y| (0..160).map(move |x| (x, y)))
            .any(|(x, y)| first.get_pixel(x, y).0[0] > 128);
        assert!(ink, "the step is printed");
        assert!(write_gif(&path, &[], 200).is_err());
    }
}
