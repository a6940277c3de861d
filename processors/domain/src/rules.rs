//! Shape rules more than one entity uses. The entities' own rules are built on these, and the
//! gateway checks its requests with those same rules, so a command it accepts is never refused
//! by a processor for its shape.

use crate::Rejection;

/// A field is not blank.
pub fn non_empty(what: &str, value: &str) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        return Err(Rejection::invalid(format!("{what} must not be empty")));
    }
    Ok(())
}

/// The Unicode format characters (general category Cf, as of Unicode 15.1), as inclusive ranges:
/// the soft hyphen, the Arabic, Syriac and Kaithi number and end-of-ayah signs, the Mongolian
/// vowel separator, the zero-width space, non-joiner and joiner, the left-to-right and
/// right-to-left marks (U+200B..U+200F), the bidirectional embeddings and overrides
/// (U+202A..U+202E), the word joiner and invisible operators (U+2060..U+2064), the
/// bidirectional isolates and deprecated format characters (U+2066..U+206F), the byte order
/// mark (U+FEFF), the interlinear annotation characters, the Egyptian hieroglyph, shorthand and
/// musical format controls and the tag characters. None of them shows, and several change how
/// the text around them shows, so a name holding one can pass for another.
pub const FORMAT_CHARACTERS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// A character that free text must not hold: a control character (general category Cc) or a
/// format character (Cf). Text of several lines (`multiline`, e.g. a description) keeps `\n`
/// and `\t`; every other control character, `\r` included, is refused there too.
pub fn is_invisible(c: char, multiline: bool) -> bool {
    if c.is_control() {
        return !(multiline && matches!(c, '\n' | '\t'));
    }
    c >= '\u{00AD}'
        && FORMAT_CHARACTERS
            .iter()
            .any(|&(first, last)| (first..=last).contains(&c))
}

/// Free text holds no [invisible](is_invisible) character.
pub fn is_visible(value: &str, multiline: bool) -> bool {
    !value.chars().any(|c| is_invisible(c, multiline))
}

/// A name, a nickname, a description, a tracking number... holds no control character and no
/// format character (right-to-left overrides, zero-width spaces and joiners, the byte order
/// mark...), which would hide or reorder what a reader sees; `multiline` free text keeps `\n`
/// and `\t`. Letters of any script (Hangul, accented Latin...) are fine.
pub fn visible_text(what: &str, value: &str, multiline: bool) -> Result<(), Rejection> {
    match value.chars().find(|&c| is_invisible(c, multiline)) {
        None => Ok(()),
        Some(c) => Err(Rejection::invalid(format!(
            "{what} must not contain control or invisible formatting characters (U+{:04X})",
            u32::from(c)
        ))),
    }
}

/// A price, an amount or a quantity is above zero.
pub fn positive<T: PartialOrd + Default>(what: &str, value: T) -> Result<(), Rejection> {
    if value <= T::default() {
        return Err(Rejection::invalid(format!("{what} must be positive")));
    }
    Ok(())
}

/// A payment needs a token for the provider.
pub fn check_payment_token(payment_token: &str) -> Result<(), Rejection> {
    if payment_token.trim().is_empty() {
        return Err(Rejection::invalid("a payment token is required"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_non_positive_values_are_invalid() {
        assert_eq!(
            non_empty("carrier", " \t"),
            Err(Rejection::invalid("carrier must not be empty"))
        );
        assert_eq!(non_empty("carrier", " CJ "), Ok(()));
        assert_eq!(
            positive("price", 0i64),
            Err(Rejection::invalid("price must be positive"))
        );
        assert!(positive("price", -1i64).is_err());
        assert!(positive("quantity", 0u64).is_err());
        assert_eq!(positive("quantity", 1u64), Ok(()));
        assert!(check_payment_token(" ").is_err());
        assert_eq!(check_payment_token("tok"), Ok(()));
    }

    fn refused(value: &str, multiline: bool) -> bool {
        visible_text("name", value, multiline).is_err()
    }

    #[test]
    fn bidirectional_overrides_and_isolates_are_refused() {
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            let value = format!("abc{c}def");
            assert!(refused(&value, false) && refused(&value, true), "{c:?}");
        }
        assert_eq!(
            visible_text("vendor name", "Shop\u{202E}gnp.exe", false),
            Err(Rejection::invalid(
                "vendor name must not contain control or invisible formatting characters (U+202E)"
            ))
        );
    }

    #[test]
    fn zero_width_characters_and_the_byte_order_mark_are_refused() {
        for c in ('\u{200B}'..='\u{200F}').chain(['\u{2060}', '\u{FEFF}']) {
            assert!(refused(&format!("a{c}b"), false), "{c:?}");
            assert!(refused(&format!("{c}"), true), "{c:?}");
            // At either end too: trimming does not remove them.
            assert!(refused(&format!("{c}ab"), false) && refused(&format!("ab{c}"), false));
        }
    }

    #[test]
    fn other_format_characters_are_refused() {
        for c in [
            '\u{00AD}',
            '\u{0600}',
            '\u{061C}',
            '\u{180E}',
            '\u{2064}',
            '\u{206F}',
            '\u{FFF9}',
            '\u{110BD}',
            '\u{1343F}',
            '\u{1BCA3}',
            '\u{1D173}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E007F}',
        ] {
            assert!(refused(&format!("a{c}b"), true), "{c:?}");
        }
        // The neighbours of the ranges are ordinary characters.
        for c in [
            '\u{00AC}',
            '\u{00AE}',
            '\u{2010}',
            '\u{2065}',
            '\u{FFFC}',
            '\u{E0080}',
        ] {
            assert!(!is_invisible(c, false), "{c:?}");
        }
    }

    #[test]
    fn control_characters_are_refused_but_text_of_several_lines_keeps_newlines_and_tabs() {
        for c in ['\0', '\u{7}', '\u{1B}', '\r', '\u{7F}', '\u{85}', '\u{9F}'] {
            let value = format!("a{c}b");
            assert!(refused(&value, false) && refused(&value, true), "{c:?}");
        }
        assert!(refused("a\nb", false) && refused("a\tb", false));
        assert_eq!(
            visible_text("description", "line one\n\tline two\n", true),
            Ok(())
        );
        assert!(refused("line one\r\nline two", true));
    }

    #[test]
    fn letters_of_any_script_and_ordinary_punctuation_pass() {
        for value in [
            "Green tea",
            "녹차 세트",
            "픽플 상점",
            "Crème brûlée à la façon d'Émile",
            "Ærøskøbing Œuvres",
            "Straße Nº 5 — “quoted” ‘text’ 50%",
            "東京 お茶",
            "Привет мир",
            "مرحبا بالعالم",
            "שלום",
            "🍵 tea ☕",
            "CJ1234567890KR",
            "a b\u{00A0}c",
        ] {
            assert_eq!(visible_text("name", value, false), Ok(()), "{value}");
            assert_eq!(visible_text("name", value, true), Ok(()), "{value}");
        }
        assert!(is_visible("녹차", false) && !is_visible("녹\u{200B}차", false));
    }
}
