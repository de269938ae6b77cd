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

/// Characters that draw nothing, join or break lines, or change the
/// direction of the text around them.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'                      // soft hyphen
            | '\u{034f}'                // combining grapheme joiner
            | '\u{061c}'                // Arabic letter mark
            | '\u{115f}'..='\u{1160}'  // Hangul fillers
            | '\u{17b4}'..='\u{17b5}'  // Khmer inherent vowels
            | '\u{180b}'..='\u{180f}'  // Mongolian selectors and vowel separator
            | '\u{200b}'..='\u{200f}'  // zero-width space, joiners, marks
            | '\u{2028}'..='\u{2029}'  // line and paragraph separators
            | '\u{202a}'..='\u{202e}'  // bidirectional embeddings, overrides
            | '\u{2060}'..='\u{206f}'  // word joiner, invisible operators, isolates
            | '\u{3164}'                // Hangul filler
            | '\u{fe00}'..='\u{fe0f}'  // variation selectors
            | '\u{feff}'                // zero-width no-break space
            | '\u{ffa0}'                // halfwidth Hangul filler
            | '\u{fff9}'..='\u{fffb}'  // interlinear annotation
            | '\u{1bca0}'..='\u{1bca3}' // shorthand format controls
            | '\u{1d173}'..='\u{1d17a}' // musical formatting
            | '\u{e0000}'..='\u{e0fff}' // tags, variation selectors supplement
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

    /// Each of these got through before: a line break that is not a
    /// control character, direction marks, invisible joiners and
    /// operators, a soft hyphen, and tag characters (which can spell
    /// hidden text).
    #[test]
    fn removes_separators_marks_joiners_and_tags() {
        for c in [
            '\u{2028}',
            '\u{2029}',
            '\u{061c}',
            '\u{2060}',
            '\u{2061}',
            '\u{2062}',
            '\u{2063}',
            '\u{2064}',
            '\u{00ad}',
            '\u{e0001}',
            '\u{e0041}',
            '\u{e007f}',
            '\u{fe0f}',
        ] {
            assert_eq!(sanitize(&format!("a{c}b")), "a?b", "U+{:04X}", c as u32);
        }
        // Letters of other scripts and ordinary emoji stay.
        assert_eq!(sanitize("prod-é-ß-日本-🙂"), "prod-é-ß-日本-🙂");
    }
}
