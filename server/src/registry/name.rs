//! Object names: entities, key columns, feature groups, features and tags.
//!
//! Invariant: a valid name matches [`NAME_PATTERN`], that is an ASCII
//! lowercase letter followed by at most 62 lowercase letters, digits or
//! underscores. Names end up in file paths, metrics and SQL-like query text,
//! so they are kept to a charset that needs no quoting anywhere.

/// The pattern every name matches, as shown in error messages.
pub const NAME_PATTERN: &str = "[a-z][a-z0-9_]{0,62}";

/// The longest valid name, in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// True if `name` matches [`NAME_PATTERN`].
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            bytes.len() <= MAX_NAME_LEN
                && first.is_ascii_lowercase()
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_pattern_and_nothing_else() {
        for good in ["a", "user_id", "clicks_1h", "a_", &"x".repeat(MAX_NAME_LEN)] {
            assert!(is_valid_name(good), "{good}");
        }
        let too_long = "x".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "1a", "_a", "Abc", "a-b", "a b", "é", too_long.as_str()] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
