//! Readers never panic on arbitrary bytes: image, mask, split CSV and COCO JSON parsers return
//! `Ok` or a typed error. Inputs are random bytes and random corruptions of valid files (which
//! reach far deeper into the decoders than pure noise).

use std::io::Cursor;
use std::path::Path;

use proptest::prelude::*;
use salt_data::dataset::parse_coco;
use salt_data::image_io::{decode_image, decode_mask};
use salt_data::split::parse_split_csv;

fn valid_files() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let grey = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(9, 7, |x, y| {
        image::Luma([(x * 31 + y * 17) as u8])
    }));
    for fmt in [
        image::ImageFormat::Png,
        image::ImageFormat::Tiff,
        image::ImageFormat::Gif,
        image::ImageFormat::Bmp,
    ] {
        let img = if fmt == image::ImageFormat::Gif {
            image::DynamicImage::ImageRgba8(grey.to_rgba8())
        } else {
            grey.clone()
        };
        let mut c = Cursor::new(Vec::new());
        img.write_to(&mut c, fmt).expect("encode fixture");
        out.push(c.into_inner());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn image_and_mask_readers_survive_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_image(&bytes, Path::new("fuzz.png"));
        let _ = decode_mask(&bytes, Path::new("fuzz.png"));
    }

    #[test]
    fn image_readers_survive_corrupted_files(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = valid_files()[which].clone();
        for (at, v) in edits {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        let len = cut.index(bytes.len() + 1);
        bytes.truncate(len.max(bytes.len() / 2));
        let r = decode_mask(&bytes, Path::new("fuzz"));
        if let Err(e) = r {
            prop_assert!(e.to_string().starts_with("fuzz"), "error does not name the file: {e}");
        }
    }

    #[test]
    fn csv_parser_survives_arbitrary_text(text in "\\PC*(\n\\PC*){0,6}") {
        let _ = parse_split_csv(&text, Path::new("d.csv"));
        let with_header = format!("imgs,split\n{text}");
        let _ = parse_split_csv(&with_header, Path::new("d.csv"));
    }

    #[test]
    fn coco_parser_survives_arbitrary_json(
        w in 0u64..40, h in 0u64..40,
        poly in proptest::collection::vec(-1e6f64..1e6, 0..14),
        id in -3i64..3,
    ) {
        let json = serde_json::json!({
            "images": [{"id": 1, "file_name": "1.png", "width": w, "height": h}],
            "annotations": [{"id": 1, "image_id": id, "category_id": 1, "segmentation": [poly]}],
        });
        let _ = parse_coco(&json.to_string(), Path::new("a.json"));
    }

    #[test]
    fn coco_parser_survives_arbitrary_text(text in "\\PC{0,200}") {
        let _ = parse_coco(&text, Path::new("a.json"));
    }
}
