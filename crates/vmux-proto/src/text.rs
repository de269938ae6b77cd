//! Making peer-controlled text safe to show.

/// Longest peer-supplied string shown, in characters.
const MAX_SHOWN: usize = 200;

/// Replaces control characters (escape sequences, newlines) and invisible
/// or direction-changing characters with `?`, and bounds the length, so
/// that a string a peer controls cannot rewrite a terminal or disguise
/// itself in a prompt.
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_control() || is_invisible(c) {
                '?'
            } else {
                c
            }
        })
        .take(MAX_SHOWN)
        .collect();
    if s.chars().nth(MAX_SHOWN).is_some() {
        out.push('…');
    }
    out
}

fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
    )
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn removes_control_and_invisible_characters() {
        assert_eq!(sanitize("host\x1b[2J\r\nevil"), "host?[2J??evil");
        assert_eq!(sanitize("a\u{202e}b"), "a?b");
        assert_eq!(sanitize(&"x".repeat(300)).chars().count(), 201);
        assert_eq!(sanitize("ssh ← bash"), "ssh ← bash");
    }
}
