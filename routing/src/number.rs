//! Phone numbers as DCE keys them: E.164 digits without the `+`.

/// Normalise a dialled or calling number (a URI user part, `tel:` number, or config entry) to
/// E.164 digits without `+`. Visual separators (`-`, `.`, `(`, `)`, space) are dropped; a
/// 10-digit NANP number gets the country code 1; `+` numbers keep their country code. URI
/// parameters after `;` are ignored. `None` when no plausible number remains.
pub fn normalize(s: &str) -> Option<String> {
    let s = s.split(';').next().unwrap_or("");
    let (plus, rest) = match s.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let mut digits = String::with_capacity(16);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '-' | '.' | '(' | ')' | ' ' => {}
            _ => return None,
        }
    }
    if plus {
        return (8..=15).contains(&digits.len()).then_some(digits);
    }
    match digits.len() {
        10 => Some(format!("1{digits}")),
        11 if digits.starts_with('1') => Some(digits),
        12..=15 => Some(digits),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn common_formats() {
        for s in [
            "+18005550100",
            "18005550100",
            "8005550100",
            "(800) 555-0100",
            "+1-800-555-0100",
            "8005550100;npdi",
        ] {
            assert_eq!(normalize(s).as_deref(), Some("18005550100"), "{s}");
        }
        assert_eq!(normalize("+442071838750").as_deref(), Some("442071838750"));
        assert_eq!(normalize("anonymous"), None);
        assert_eq!(normalize("12345"), None);
    }
}
