//! Reading masks from image files (feature `image`, on by default).

use std::path::Path;

use image::DynamicImage;

use crate::error::{Error, Result};
use crate::mask::Mask;

/// Reads a mask from a PNG, TIFF, GIF or JPEG file, 8- or 16-bit (or float), grey or colour.
/// A pixel is foreground when its value is `> threshold`, compared with the raw sample values
/// (0–255 for 8-bit, 0–65535 for 16-bit). For colour images the largest colour channel counts
/// (so white, red or any coloured label is foreground); alpha is ignored. GIF palettes are
/// expanded to colour first.
///
/// # Errors
/// [`Error::ReadImage`] naming the file when it cannot be opened or decoded; [`Error::Threshold`]
/// when `threshold` is NaN, negative, or not below the largest sample value of an integer format
/// (255 for 8-bit, 65535 for 16-bit): no pixel could then be foreground. Float images accept any
/// finite threshold >= 0.
pub fn read_mask(path: impl AsRef<Path>, threshold: f64) -> Result<Mask> {
    let path = path.as_ref();
    let err = |source| Error::ReadImage {
        path: path.to_path_buf(),
        source,
    };
    let img = image::ImageReader::open(path)
        .map_err(|e| err(image::ImageError::IoError(e)))?
        .with_guessed_format()
        .map_err(|e| err(image::ImageError::IoError(e)))?
        .decode()
        .map_err(err)?;
    let (max, bits) = match img.color().bytes_per_pixel() / img.color().channel_count() {
        1 => (255.0, 8),
        2 => (65535.0, 16),
        _ => (f64::INFINITY, 32),
    };
    if !(threshold >= 0.0 && threshold < max) {
        return Err(Error::Threshold {
            path: path.to_path_buf(),
            threshold,
            max,
            bits,
        });
    }
    Ok(mask_from_image(&img, threshold))
}

/// Thresholds a decoded image as [`read_mask`] does.
pub fn mask_from_image(img: &DynamicImage, threshold: f64) -> Mask {
    let (w, h) = (img.width() as usize, img.height() as usize);
    // `colour` = number of colour channels, the rest (alpha) is skipped.
    fn fg<T: Copy + Into<f64>>(raw: &[T], channels: usize, colour: usize, t: f64) -> Vec<bool> {
        raw.chunks_exact(channels)
            .map(|px| px[..colour].iter().any(|&v| v.into() > t))
            .collect()
    }
    let data = match img {
        DynamicImage::ImageLuma8(i) => fg(i.as_raw(), 1, 1, threshold),
        DynamicImage::ImageLumaA8(i) => fg(i.as_raw(), 2, 1, threshold),
        DynamicImage::ImageRgb8(i) => fg(i.as_raw(), 3, 3, threshold),
        DynamicImage::ImageRgba8(i) => fg(i.as_raw(), 4, 3, threshold),
        DynamicImage::ImageLuma16(i) => fg(i.as_raw(), 1, 1, threshold),
        DynamicImage::ImageLumaA16(i) => fg(i.as_raw(), 2, 1, threshold),
        DynamicImage::ImageRgb16(i) => fg(i.as_raw(), 3, 3, threshold),
        DynamicImage::ImageRgba16(i) => fg(i.as_raw(), 4, 3, threshold),
        DynamicImage::ImageRgb32F(i) => fg(i.as_raw(), 3, 3, threshold),
        DynamicImage::ImageRgba32F(i) => fg(i.as_raw(), 4, 3, threshold),
        other => fg(other.to_rgba32f().as_raw(), 4, 3, threshold),
    };
    Mask::new(w, h, data).unwrap_or_else(|_| unreachable!("decoded image has width*height pixels"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb, Rgba};

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("salt-metrics-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn reads_grey_colour_8_and_16_bit() {
        let expected = Mask::from_fn(3, 2, |x, y| (x + y) % 2 == 0);
        let grey8 = ImageBuffer::from_fn(3, 2, |x, y| {
            Luma([if (x + y) % 2 == 0 { 255u8 } else { 0 }])
        });
        let grey16 = ImageBuffer::from_fn(3, 2, |x, y| {
            Luma([if (x + y) % 2 == 0 { 300u16 } else { 0 }])
        });
        let rgb8 = ImageBuffer::from_fn(3, 2, |x, y| {
            Rgb([0u8, if (x + y) % 2 == 0 { 9 } else { 0 }, 0])
        });
        let rgba8 = ImageBuffer::from_fn(3, 2, |x, y| {
            Rgba([if (x + y) % 2 == 0 { 200u8 } else { 0 }, 0, 0, 255])
        });
        let cases: Vec<(&str, DynamicImage)> = vec![
            ("g8.png", grey8.clone().into()),
            ("g16.png", grey16.clone().into()),
            ("g8.tif", grey8.into()),
            ("g16.tif", grey16.into()),
            ("rgb.png", rgb8.into()),
            ("rgba.gif", rgba8.into()),
        ];
        for (name, img) in cases {
            let path = tmp(name);
            img.save(&path).unwrap();
            assert_eq!(read_mask(&path, 0.0).unwrap(), expected, "{name}");
        }
        // The threshold compares raw values: 300 > 255 in 16-bit, 254 is not > 254 in 8-bit
        // (values 0/255 here, so 254 keeps them); a threshold no 8-bit value can exceed (255),
        // or NaN, or a negative one is an error naming the file.
        assert_eq!(read_mask(tmp("g16.tif"), 255.0).unwrap(), expected);
        assert_eq!(read_mask(tmp("g8.png"), 254.0).unwrap(), expected);
        for bad in [255.0, 300.0, -1.0, f64::NAN] {
            let err = read_mask(tmp("g8.png"), bad).unwrap_err();
            assert!(
                matches!(err, Error::Threshold { .. }) && err.to_string().contains("g8.png"),
                "{bad}: {err}"
            );
        }
        assert!(read_mask(tmp("g16.tif"), 65535.0).is_err());
    }

    #[test]
    fn unreadable_files_name_the_path() {
        let missing = tmp("does-not-exist.png");
        let err = read_mask(&missing, 0.0).unwrap_err();
        assert!(err.to_string().contains("does-not-exist.png"), "{err}");
        let corrupt = tmp("corrupt.png");
        std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let err = read_mask(&corrupt, 0.0).unwrap_err();
        assert!(matches!(err, Error::ReadImage { .. }) && err.to_string().contains("corrupt.png"));
    }
}
