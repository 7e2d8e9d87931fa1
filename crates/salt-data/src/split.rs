//! Train/test splits: the paper's `data_split.csv` (`imgs,split`), and seeded splits written back
//! so that runs are reproducible.

use std::fmt;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::{Error, Result};

/// Split names accepted in `data_split.csv` (and in `--split` flags).
pub const SPLIT_NAMES: &str = "train, val, test";

/// A split of a dataset. In the paper's CSVs `val` is the reported test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    /// Training images.
    Train,
    /// The paper's evaluation split (`val` in its CSVs).
    Val,
    /// A held-out test split (ARCADE publishes one besides `val`).
    Test,
}

impl Split {
    /// The name used in CSVs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// Parses `train`, `val` or `test` (case-insensitive).
    pub fn parse(s: &str) -> Option<Split> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Some(Split::Train),
            "val" => Some(Split::Val),
            "test" => Some(Split::Test),
            _ => None,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Split::parse(s).ok_or_else(|| Error::Invalid {
            what: "split",
            message: format!("{s:?}; expected one of {SPLIT_NAMES}"),
        })
    }
}

/// One row of `data_split.csv`: the image file name (as written in the `imgs` column) and its split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitRow {
    /// The `imgs` value: an image file name in `images/` (e.g. `21_training.png`) or a stem.
    pub image: String,
    /// The split.
    pub split: Split,
}

/// Splits one CSV line into fields (RFC 4180: a field in double quotes may hold `,` and `""`
/// for a quote; spaces around a field are trimmed). An unterminated quote is an error.
fn split_fields(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".into()),
                }
            }
            while chars.peek().is_some_and(|c| *c != ',') {
                let c = chars.next().unwrap_or(' ');
                if !c.is_whitespace() {
                    return Err(format!("text after a quoted field: {c:?}"));
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                field.push(c);
                chars.next();
            }
            field = field.trim().to_string();
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            _ => return Ok(fields),
        }
    }
}

/// A CSV field as written by [`format_split_csv`]: quoted when it holds `,`, `"` or leading or
/// trailing spaces (which the reader would trim).
fn quote(field: &str) -> String {
    if field.contains([',', '"']) || field.trim() != field {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Parses the text of a split CSV: a header naming `imgs` and `split` (other columns ignored,
/// any order), then one row per image. `path` is used in errors only.
pub fn parse_split_csv(text: &str, path: &Path) -> Result<Vec<SplitRow>> {
    let (rows, mut problems) = parse_split_csv_lenient(text, path);
    match problems.is_empty() {
        true => Ok(rows),
        false => Err(problems.swap_remove(0)),
    }
}

/// Like [`parse_split_csv`], but goes on past bad rows: every readable row, and every problem
/// (each naming its line). A missing or unusable header is the only problem when there is one.
pub fn parse_split_csv_lenient(text: &str, path: &Path) -> (Vec<SplitRow>, Vec<Error>) {
    let (rows, problems) = parse_split_csv_lines(text, path);
    (rows.into_iter().map(|(_, r)| r).collect(), problems)
}

/// [`parse_split_csv_lenient`] with each row's 1-based line number.
pub fn parse_split_csv_lines(text: &str, path: &Path) -> (Vec<(usize, SplitRow)>, Vec<Error>) {
    let csv_err = |line: usize, message: String| Error::Csv {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut lines = text
        .trim_start_matches('\u{feff}')
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return (
            Vec::new(),
            vec![csv_err(
                1,
                "empty file; expected a header `imgs,split`".into(),
            )],
        );
    };
    let cols = match split_fields(header) {
        Ok(c) => c,
        Err(m) => return (Vec::new(), vec![csv_err(1, m)]),
    };
    let find = |name: &str| cols.iter().position(|c| c.eq_ignore_ascii_case(name));
    let (Some(ic), Some(sc)) = (find("imgs"), find("split")) else {
        return (
            Vec::new(),
            vec![csv_err(
                1,
                format!("header {header:?} lacks the columns `imgs` and `split`"),
            )],
        );
    };
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in lines {
        let n = i + 1;
        let fields = match split_fields(line) {
            Ok(f) => f,
            Err(m) => {
                problems.push(csv_err(n, m));
                continue;
            }
        };
        if fields.len() != cols.len() {
            problems.push(csv_err(
                n,
                format!("{} fields, header has {}", fields.len(), cols.len()),
            ));
            continue;
        }
        let image = fields[ic].to_string();
        if image.is_empty() {
            problems.push(csv_err(n, "empty `imgs` value".into()));
            continue;
        }
        let Some(split) = Split::parse(&fields[sc]) else {
            problems.push(Error::UnknownSplit {
                path: path.to_path_buf(),
                line: n,
                split: fields[sc].to_string(),
                expected: SPLIT_NAMES,
            });
            continue;
        };
        if !seen.insert(image.clone()) {
            problems.push(csv_err(n, format!("{image:?} listed twice")));
            continue;
        }
        rows.push((n, SplitRow { image, split }));
    }
    (rows, problems)
}

/// Reads `data_split.csv`.
pub fn read_split_csv(path: &Path) -> Result<Vec<SplitRow>> {
    parse_split_csv(&read_text(path)?, path)
}

/// Like [`read_split_csv`], but goes on past bad rows ([`parse_split_csv_lenient`]); only an
/// unreadable file is an error.
pub fn read_split_csv_lenient(path: &Path) -> Result<(Vec<SplitRow>, Vec<Error>)> {
    Ok(parse_split_csv_lenient(&read_text(path)?, path))
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|_| Error::Csv {
        path: path.to_path_buf(),
        line: 1,
        message: "not UTF-8 text".into(),
    })
}

/// The CSV text for `rows` (header `imgs,split`; names quoted where needed, so that
/// [`parse_split_csv`] reads back exactly these rows).
pub fn format_split_csv(rows: &[SplitRow]) -> String {
    let mut out = String::from("imgs,split\n");
    for r in rows {
        out.push_str(&format!("{},{}\n", quote(&r.image), r.split));
    }
    out
}

/// Writes `rows` to `path` atomically. A name with a line break cannot be a CSV row we read
/// back: it is an error naming it, and nothing is written.
pub fn write_split_csv(path: &Path, rows: &[SplitRow]) -> Result<()> {
    if let Some(r) = rows.iter().find(|r| r.image.contains(['\n', '\r'])) {
        return Err(Error::Invalid {
            what: "image name",
            message: format!("{:?} holds a line break; rename the file", r.image),
        });
    }
    crate::image_io::write_atomic(path, format_split_csv(rows).as_bytes())
}

/// A seeded split of `images` into `n_train` train and `n_test` `val` rows (the paper calls its
/// test split `val`). Images beyond `n_train + n_test` are left out. Rows come back in the input
/// order, so the CSV diffs cleanly; the choice depends only on the sorted names and the seed.
pub fn seeded_split(
    images: &[String],
    n_train: usize,
    n_test: usize,
    seed: u64,
) -> Result<Vec<SplitRow>> {
    if n_train + n_test > images.len() {
        return Err(Error::Invalid {
            what: "split counts",
            message: format!("{n_train} train + {n_test} test > {} images", images.len()),
        });
    }
    if n_train == 0 || n_test == 0 {
        return Err(Error::Invalid {
            what: "split counts",
            message: "train and test counts must be > 0".into(),
        });
    }
    let mut sorted: Vec<&String> = images.iter().collect();
    sorted.sort();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    sorted.shuffle(&mut rng);
    let assign: std::collections::HashMap<&String, Split> = sorted
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < n_train + n_test)
        .map(|(i, name)| {
            (
                *name,
                if i < n_train {
                    Split::Train
                } else {
                    Split::Val
                },
            )
        })
        .collect();
    Ok(images
        .iter()
        .filter_map(|name| {
            assign.get(name).map(|&split| SplitRow {
                image: name.clone(),
                split,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_commas_and_quotes_round_trip() {
        let rows: Vec<SplitRow> = ["a,b.png", "say \"hi\".png", " pad.png", "plain.png"]
            .iter()
            .map(|n| SplitRow {
                image: n.to_string(),
                split: Split::Train,
            })
            .collect();
        let text = format_split_csv(&rows);
        assert_eq!(parse_split_csv(&text, Path::new("d.csv")).unwrap(), rows);
        let bad = [SplitRow {
            image: "a\nb.png".into(),
            split: Split::Val,
        }];
        let dir = tempfile::tempdir().unwrap();
        let err = write_split_csv(&dir.path().join("s.csv"), &bad).unwrap_err();
        assert!(err.to_string().contains("line break"), "{err}");
        assert!(!dir.path().join("s.csv").exists());
        let err = parse_split_csv("imgs,split\n\"open,train\n", Path::new("d.csv")).unwrap_err();
        assert!(err.to_string().contains("d.csv:2: unterminated"), "{err}");
    }

    #[test]
    fn parses_paper_csv_with_extra_columns_and_quotes() {
        let text = "\u{feff}idx,imgs,split\n0,\"1.png\",train\n1,2.png,VAL\n\n";
        let rows = parse_split_csv(text, Path::new("d.csv")).unwrap();
        assert_eq!(
            rows,
            vec![
                SplitRow {
                    image: "1.png".into(),
                    split: Split::Train
                },
                SplitRow {
                    image: "2.png".into(),
                    split: Split::Val
                },
            ]
        );
        let back = parse_split_csv(&format_split_csv(&rows), Path::new("d.csv")).unwrap();
        assert_eq!(back, rows);
    }

    #[test]
    fn unknown_split_and_bad_rows_name_the_line() {
        let err = parse_split_csv(
            "imgs,split\na.png,train\nb.png,holdout\n",
            Path::new("d.csv"),
        )
        .unwrap_err();
        assert!(matches!(err, Error::UnknownSplit { line: 3, .. }), "{err}");
        assert!(err.to_string().starts_with("d.csv:3"), "{err}");
        let err = parse_split_csv("img,split\n", Path::new("d.csv")).unwrap_err();
        assert!(matches!(err, Error::Csv { line: 1, .. }));
        let err = parse_split_csv("imgs,split\na,train\na,val\n", Path::new("d.csv")).unwrap_err();
        assert!(matches!(err, Error::Csv { line: 3, .. }));
    }

    #[test]
    fn seeded_split_has_counts_and_is_deterministic() {
        let names: Vec<String> = (0..20).map(|i| format!("{i}.png")).collect();
        let a = seeded_split(&names, 14, 6, 7).unwrap();
        let b = seeded_split(&names, 14, 6, 7).unwrap();
        let c = seeded_split(&names, 14, 6, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.iter().filter(|r| r.split == Split::Train).count(), 14);
        assert_eq!(a.iter().filter(|r| r.split == Split::Val).count(), 6);
        assert!(seeded_split(&names, 15, 6, 7).is_err());
    }
}
