//! Dotted path patterns that choose layers and parameters.
//!
//! peft's `target_modules` semantics, plus wildcards:
//! - a plain pattern (`attn.qkv`) matches a path equal to it or ending in `.` + it
//!   (`image_encoder.blocks.3.attn.qkv`);
//! - a pattern with `*` is matched against the whole path: `*` stands for any characters except
//!   `.`, `**` for any characters (`image_encoder.blocks.*.attn.qkv`, `**.norm1.*`);
//! - `re:<regex>` is a regular expression over the whole path, as peft's string form
//!   (Rust `regex` syntax).

/// Whether `path` matches `pattern`.
pub fn matches(pattern: &str, path: &str) -> bool {
    if let Some(re) = pattern.strip_prefix("re:") {
        return regex_full_match(re, path);
    }
    if pattern.contains('*') {
        return glob(pattern.as_bytes(), path.as_bytes());
    }
    path == pattern
        || (path.len() > pattern.len()
            && path.ends_with(pattern)
            && path.as_bytes()[path.len() - pattern.len() - 1] == b'.')
}

/// Whether any of `patterns` matches `path`.
pub fn matches_any<S: AsRef<str>>(patterns: &[S], path: &str) -> bool {
    patterns.iter().any(|p| matches(p.as_ref(), path))
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            let rest = &p[2..];
            (0..=s.len()).any(|i| glob(rest, &s[i..]))
        }
        Some(b'*') => {
            let rest = &p[1..];
            let seg = s.iter().position(|&c| c == b'.').unwrap_or(s.len());
            (0..=seg).any(|i| glob(rest, &s[i..]))
        }
        Some(&c) => s.first() == Some(&c) && glob(&p[1..], &s[1..]),
    }
}

fn regex_full_match(re: &str, s: &str) -> bool {
    // Anchored on both ends, as peft's `re.fullmatch`. An invalid regex matches nothing; callers
    // validate patterns up front with [`validate`].
    regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(s))
}

/// Checks that a pattern is well formed (a `re:` pattern must be a valid regular expression).
pub fn validate(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("an empty pattern".into());
    }
    if let Some(re) = pattern.strip_prefix("re:") {
        regex::Regex::new(re).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn peft_suffix_semantics() {
        assert!(matches("attn.qkv", "image_encoder.blocks.3.attn.qkv"));
        assert!(matches("qkv", "image_encoder.blocks.3.attn.qkv"));
        assert!(!matches("kv", "image_encoder.blocks.3.attn.qkv"));
        assert!(matches("image_encoder.neck.0", "image_encoder.neck.0"));
        assert!(!matches(
            "attn.qkv",
            "image_encoder.blocks.3.attn.qkv.extra"
        ));
    }

    #[test]
    fn wildcards() {
        assert!(matches(
            "image_encoder.blocks.*.attn.qkv",
            "image_encoder.blocks.11.attn.qkv"
        ));
        assert!(!matches(
            "image_encoder.*.attn.qkv",
            "image_encoder.blocks.11.attn.qkv"
        ));
        assert!(matches("**.norm1.*", "image_encoder.blocks.0.norm1.gamma"));
        assert!(matches(
            "**norm*.beta",
            "mask_decoder.transformer.norm_final_attn.beta"
        ));
        assert!(!matches(
            "**norm*",
            "mask_decoder.transformer.norm_final_attn.beta"
        ));
        assert!(!matches("**.norm1.*", "image_encoder.blocks.0.norm2.gamma"));
    }

    #[test]
    fn regex_subset() {
        assert!(matches(
            r"re:.*blocks\.(0|1)\.attn\.qkv",
            "image_encoder.blocks.1.attn.qkv"
        ));
        assert!(!matches(
            r"re:.*blocks\.(0|1)\.attn\.qkv",
            "image_encoder.blocks.2.attn.qkv"
        ));
        assert!(matches(
            r"re:.*blocks\.\d+\.mlp\.lin[12]",
            "image_encoder.blocks.10.mlp.lin2"
        ));
        assert!(!matches(
            r"re:.*blocks\.\d+\.mlp\.lin[12]",
            "image_encoder.blocks.10.mlp.lin3"
        ));
        assert!(matches(r"re:^a?b+$", "bbb"));
    }
}
