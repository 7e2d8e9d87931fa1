//! Reading and writing images and masks, refusing formats that would silently corrupt a mask.
//!
//! Accepted images: 8-bit grey or 8-bit RGB (PNG, TIFF, JPEG), and GIF (always palette-based; it
//! is how DRIVE publishes its masks, so GIF frames are read as RGB and the alpha is ignored).
//! Refused with [`Error::PixelFormat`]: 16-bit, float, grey+alpha, RGBA, and palette PNGs (whose
//! indices are not intensities). Masks are decoded the same way; a pixel is vessel when any colour
//! channel is > 0 (the paper's "vessel = any value > 0").

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use crate::{Error, Result};

/// Largest accepted width or height, so that arbitrary bytes cannot ask for huge allocations.
pub const MAX_SIDE: u32 = 16_384;

/// An 8-bit image, rows of `width` pixels of `channels` interleaved bytes (1 = grey, 3 = RGB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image8 {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `height * width * channels` bytes, row-major.
    pub data: Vec<u8>,
}

impl Image8 {
    /// A black image.
    pub fn zeros(width: usize, height: usize, channels: usize) -> Self {
        Self {
            width,
            height,
            channels,
            data: vec![0; width * height * channels],
        }
    }

    /// The same image with 3 channels (grey replicated; RGB unchanged).
    pub fn to_rgb(&self) -> Image8 {
        if self.channels == 3 {
            return self.clone();
        }
        let data = self.data.iter().flat_map(|&v| [v, v, v]).collect();
        Image8 {
            width: self.width,
            height: self.height,
            channels: 3,
            data,
        }
    }
}

/// A binary mask: `height * width` bytes, 1 = vessel (or inside the field of view), 0 = not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// 0/1 per pixel, row-major.
    pub data: Vec<u8>,
}

impl Mask {
    /// An all-zero mask.
    pub fn zeros(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0; width * height],
        }
    }

    /// Number of pixels set.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }
}

/// Colour type byte of a PNG's IHDR and its bit depth, if the bytes look like a PNG.
fn png_header(bytes: &[u8]) -> Option<(u8, u8)> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    if bytes.len() < 29 || bytes[..8] != SIGNATURE || &bytes[12..16] != b"IHDR" {
        return None;
    }
    Some((bytes[25], bytes[24]))
}

fn pixel_error(path: &Path, found: impl Into<String>) -> Error {
    Error::PixelFormat {
        path: path.to_path_buf(),
        found: found.into(),
        expected: "8-bit grey or 8-bit RGB (or a GIF)",
    }
}

/// Whether JPEG bytes end their last scan with an end-of-image marker (`FF D9`). Inside
/// entropy-coded data a `FF` byte is always followed by `00` or a restart marker, so an `FF D9`
/// after the last start-of-scan (`FF DA`) is the end of the image.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(i) => bytes[i + 2..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// Decodes image bytes; `path` is only used in errors. Every decoder error, and a truncated
/// JPEG (which the decoder itself would accept), is an error naming the file.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<Image8> {
    let decode_err = |source| Error::Decode {
        path: path.to_path_buf(),
        source,
    };
    let format = image::guess_format(bytes).map_err(decode_err)?;
    if format == ImageFormat::Png {
        match png_header(bytes) {
            Some((_, 16)) => return Err(pixel_error(path, "16-bit PNG")),
            Some((3, _)) => return Err(pixel_error(path, "palette PNG")),
            Some((4, _)) => return Err(pixel_error(path, "grey+alpha PNG")),
            Some((6, _)) => return Err(pixel_error(path, "RGBA PNG")),
            _ => {}
        }
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        // The JPEG decoder fills a truncated scan with grey and reports success.
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            format: "JPEG",
            what: "no end-of-image marker after the last scan",
        });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(1 << 30);
    reader.limits(limits);
    let img = reader.decode().map_err(decode_err)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(pixel_error(path, "an empty (0-pixel) image"));
    }
    let (channels, data) = match img {
        DynamicImage::ImageLuma8(b) => (1, b.into_raw()),
        DynamicImage::ImageRgb8(b) => (3, b.into_raw()),
        DynamicImage::ImageRgba8(b) if format == ImageFormat::Gif => {
            (3, b.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect())
        }
        other => return Err(pixel_error(path, format!("{:?}", other.color()))),
    };
    Ok(Image8 {
        width: w,
        height: h,
        channels,
        data,
    })
}

/// Decodes mask bytes: vessel where any channel is > 0.
pub fn decode_mask(bytes: &[u8], path: &Path) -> Result<Mask> {
    let img = decode_image(bytes, path)?;
    let data = img
        .data
        .chunks_exact(img.channels)
        .map(|p| u8::from(p.iter().any(|&v| v > 0)))
        .collect();
    Ok(Mask {
        width: img.width,
        height: img.height,
        data,
    })
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads an image file (see the module docs for what is accepted).
pub fn read_image(path: &Path) -> Result<Image8> {
    decode_image(&read(path)?, path)
}

/// Reads a mask file (see the module docs).
pub fn read_mask(path: &Path) -> Result<Mask> {
    decode_mask(&read(path)?, path)
}

/// Reads a mask and checks it has the image's size.
pub fn read_mask_for(path: &Path, image: &Image8, image_path: &Path) -> Result<Mask> {
    let mask = read_mask(path)?;
    if (mask.width, mask.height) != (image.width, image.height) {
        return Err(Error::MaskSize {
            mask: path.to_path_buf(),
            mask_w: mask.width as u32,
            mask_h: mask.height as u32,
            image: image_path.to_path_buf(),
            image_w: image.width as u32,
            image_h: image.height as u32,
        });
    }
    Ok(mask)
}

/// Writes `bytes` to `path` through a temporary file in the same directory, then renames it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn encode(path: &Path, img: DynamicImage, format: ImageFormat) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format)
        .map_err(|source| Error::Encode {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(out.into_inner())
}

fn dynamic(img: &Image8) -> DynamicImage {
    let (w, h) = (img.width as u32, img.height as u32);
    match img.channels {
        1 => DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(w, h, img.data.clone()).expect("buffer matches size"),
        ),
        _ => DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(w, h, img.to_rgb().data).expect("buffer matches size"),
        ),
    }
}

/// Writes an image in the format given by the extension (`png`, `tif`/`tiff`, `gif`), atomically.
pub fn write_image(path: &Path, img: &Image8) -> Result<()> {
    let format = ImageFormat::from_path(path).map_err(|source| Error::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    let dynimg = match format {
        ImageFormat::Gif => DynamicImage::ImageRgba8(dynamic(img).to_rgba8()),
        _ => dynamic(img),
    };
    write_atomic(path, &encode(path, dynimg, format)?)
}

/// Writes a mask as 0/255 grey (format from the extension), atomically.
pub fn write_mask(path: &Path, mask: &Mask) -> Result<()> {
    let data = mask
        .data
        .iter()
        .map(|&v| if v != 0 { 255 } else { 0 })
        .collect();
    write_image(
        path,
        &Image8 {
            width: mask.width,
            height: mask.height,
            channels: 1,
            data,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(img: DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn grey_and_rgb_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let img = Image8 {
            width: 3,
            height: 2,
            channels: 3,
            data: (0..18).collect(),
        };
        let p = dir.path().join("a.png");
        write_image(&p, &img).unwrap();
        assert_eq!(read_image(&p).unwrap(), img);
        let mask = Mask {
            width: 3,
            height: 2,
            data: vec![0, 1, 0, 1, 1, 0],
        };
        for ext in ["png", "gif", "tif"] {
            let p = dir.path().join(format!("m.{ext}"));
            write_mask(&p, &mask).unwrap();
            assert_eq!(read_mask(&p).unwrap(), mask, "{ext}");
        }
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        let img = DynamicImage::ImageLuma8(image::ImageBuffer::from_fn(32, 24, |x, y| {
            image::Luma([(x * 7 + y * 3) as u8])
        }));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        let full = out.into_inner();
        let p = Path::new("scan.jpg");
        assert_eq!(decode_image(&full, p).unwrap().width, 32);
        // Trailing bytes after the end-of-image marker are tolerated, as every viewer does.
        let mut padded = full.clone();
        padded.extend_from_slice(&[0, 0, 0]);
        assert!(decode_image(&padded, p).is_ok());
        for cut in (2..full.len() - 1).step_by(7).chain([full.len() - 1]) {
            let err = decode_image(&full[..cut], p).unwrap_err();
            assert!(err.to_string().contains("scan.jpg"), "cut {cut}: {err}");
        }
        // The other formats' decoders catch truncation themselves: check that they still do.
        for format in [ImageFormat::Png, ImageFormat::Tiff, ImageFormat::Gif] {
            let img = match format {
                ImageFormat::Gif => DynamicImage::ImageRgba8(img.to_rgba8()),
                _ => img.clone(),
            };
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, format).unwrap();
            let full = out.into_inner();
            let p = Path::new("scan.img");
            assert!(decode_image(&full, p).is_ok(), "{format:?}");
            for cut in (8..full.len() - 1).step_by(5) {
                let err = decode_image(&full[..cut], p);
                assert!(
                    err.is_err(),
                    "{format:?} cut at {cut} of {} decoded",
                    full.len()
                );
            }
        }
    }

    #[test]
    fn refuses_16bit_rgba_palette_and_truncated() {
        let p = Path::new("x.png");
        let b16 = png_bytes(DynamicImage::ImageLuma16(image::ImageBuffer::new(2, 2)));
        assert!(matches!(
            decode_image(&b16, p),
            Err(Error::PixelFormat { .. })
        ));
        let rgba = png_bytes(DynamicImage::ImageRgba8(image::ImageBuffer::new(2, 2)));
        let err = decode_mask(&rgba, p).unwrap_err();
        assert!(
            err.to_string().contains("x.png") && err.to_string().contains("RGBA"),
            "{err}"
        );
        let mut palette = png_bytes(DynamicImage::ImageLuma8(image::ImageBuffer::new(2, 2)));
        palette[25] = 3; // colour type byte of IHDR
        assert!(matches!(
            decode_image(&palette, p),
            Err(Error::PixelFormat { .. })
        ));
        let good = png_bytes(DynamicImage::ImageLuma8(image::ImageBuffer::new(8, 8)));
        let truncated = &good[..good.len() - 20];
        assert!(matches!(
            decode_image(truncated, p),
            Err(Error::Decode { .. })
        ));
        assert!(matches!(
            decode_image(b"not an image", p),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn mask_of_other_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().join("m.png");
        write_mask(&mp, &Mask::zeros(4, 4)).unwrap();
        let img = Image8::zeros(5, 4, 1);
        let err = read_mask_for(&mp, &img, Path::new("i.png")).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MaskSize {
                    mask_w: 4,
                    image_w: 5,
                    ..
                }
            ),
            "{err}"
        );
    }
}
