//! Text cleaning and tokenisation (MODEL.md §2).
//!
//! The rules, applied in this order:
//!
//! 1. `_` becomes a space;
//! 2. every character other than a letter, a digit, `.`, `'` or `` ` `` becomes a space (commas,
//!    hyphens, brackets, tabs …);
//! 3. a `.` that follows a letter is removed (`U.S.A.` -> `USA`, `etc.` -> `etc`; `3.5` is kept).
//!    As with a regular-expression look-behind, "follows" refers to the text before this step, so
//!    `wait...` keeps two of its three dots;
//! 4. runs of digits and runs of letters are split apart, both ways (`32gb` -> `32 gb`,
//!    `mp3` -> `mp 3`);
//! 5. `'s ` and then `s' ` become a single space (`cook's book` -> `cook book`, `cats' toys` ->
//!    `cat toys`); both need the following space (an `'s` that ends the text stays), and both are
//!    case-sensitive because lowercasing comes later;
//! 6. `'ve`, `'re`, `'d` and `'ll` are split off as their own tokens by a space inserted before
//!    them (`they're` -> `they 're`); case-sensitive, like step 5;
//! 7. whitespace is collapsed, the text lowercased and split on whitespace;
//! 8. English stop words ([`crate::stopwords`]) are dropped, *after* lowercasing (the authors'
//!    code drops them before lowercasing, so `The` survives there; MODEL.md §2 says not to copy that);
//! 9. if no token is left, the tokens are the lowercased raw text split on whitespace (stop words
//!    included), so that a text made only of stop words or punctuation still has tokens.
//!
//! **Deliberate deviation from MODEL.md §2.** The specification keeps only ASCII `[A-Za-z0-9]`; here every
//! Unicode letter and digit ([`char::is_alphanumeric`]) is kept, with "letter" meaning
//! [`char::is_alphabetic`] and "digit" any other [`char::is_numeric`] character. The development
//! benchmark is Swedish (`å ä ö`), whose words the ASCII rule would tear apart. On ASCII input both
//! rules give identical results. Lowercasing is per character ([`char::to_lowercase`]), so a Greek
//! final capital sigma becomes `σ`, not `ς`.
//!
//! [`for_each_token`] is the allocation-free core: it cleans into reused thread-local buffers and
//! hands out each final token as a `&str`. [`tokenize`] and [`crate::vocab::Vocab::encode`] are
//! both built on it, so they always agree.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::stopwords::is_stop_word;

/// Reusable buffers for cleaning one text.
#[derive(Default)]
struct Scratch {
    a: String,
    b: String,
    tok: String,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Letter,
    Digit,
    Other,
}

#[inline]
fn kind(c: char) -> Kind {
    if c.is_ascii() {
        if c.is_ascii_alphabetic() {
            Kind::Letter
        } else if c.is_ascii_digit() {
            Kind::Digit
        } else {
            Kind::Other
        }
    } else if ('\u{c0}'..='\u{ff}').contains(&c) {
        // Latin-1 letters (À…ÿ) without the table look-up; × and ÷ are symbols.
        if c == '×' || c == '÷' {
            Kind::Other
        } else {
            Kind::Letter
        }
    } else if c.is_alphabetic() {
        Kind::Letter
    } else if c.is_numeric() {
        Kind::Digit
    } else {
        Kind::Other
    }
}

/// Pushes `c` lowercased ([`char::to_lowercase`]), with fast paths for ASCII and Latin-1.
#[inline]
fn push_lower(out: &mut String, c: char) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
    } else if ('\u{c0}'..='\u{de}').contains(&c) && c != '×' {
        // À…Þ -> à…þ: a fixed offset.
        out.push(char::from_u32(c as u32 + 0x20).unwrap_or(c));
    } else if ('\u{df}'..='\u{ff}').contains(&c) {
        out.push(c); // ß…ÿ are lowercase already (and ÷ is no letter)
    } else {
        out.extend(c.to_lowercase());
    }
}

/// Steps 1–4 from `text` into `out`, lowercasing on the way if `lower`; returns whether an
/// apostrophe was kept (steps 5–6 can only change anything then, and they are case-sensitive,
/// so they need the text *not* lowercased yet).
fn clean_chars(text: &str, out: &mut String, lower: bool) -> bool {
    out.clear();
    out.reserve(text.len() + 8);
    let mut saw_apostrophe = false;
    // Whether the previous character after step 2 is a letter (the look-behind of step 3).
    let mut prev_letter = false;
    // The kind of the last character written to `out` (step 4 works on step 3's output).
    let mut last = Kind::Other;
    for c in text.chars() {
        let k = kind(c);
        let after_letter = prev_letter;
        prev_letter = k == Kind::Letter;
        if k == Kind::Other {
            match c {
                // Step 3; the dropped dot is invisible to step 4.
                '.' if after_letter => continue,
                '.' | '`' => out.push(c),
                '\'' => {
                    saw_apostrophe = true;
                    out.push(c);
                }
                _ => out.push(' '),
            }
            last = Kind::Other;
            continue;
        }
        // Step 4: a letter next to a digit (either way round).
        if last != Kind::Other && last != k {
            out.push(' ');
        }
        if lower {
            push_lower(out, c);
        } else {
            out.push(c);
        }
        last = k;
    }
    saw_apostrophe
}

/// Copies `src` to `dst` without the first two bytes of every non-overlapping occurrence of
/// `pat` (a 3-byte ASCII pattern ending in a space): `'s ` -> ` `.
fn drop_before_space(src: &str, pat: &str, dst: &mut String) {
    dst.clear();
    let mut last = 0;
    for (i, _) in src.match_indices(pat) {
        dst.push_str(&src[last..i]);
        last = i + pat.len() - 1;
    }
    dst.push_str(&src[last..]);
}

/// Step 6: a space before every `'ve`, `'re`, `'d`, `'ll`.
fn split_contractions(src: &str, dst: &mut String) {
    dst.clear();
    let mut last = 0;
    for (i, _) in src.match_indices('\'') {
        let rest = &src.as_bytes()[i + 1..];
        if rest.starts_with(b"ve")
            || rest.starts_with(b"re")
            || rest.starts_with(b"d")
            || rest.starts_with(b"ll")
        {
            dst.push_str(&src[last..i]);
            dst.push(' ');
            last = i;
        }
    }
    dst.push_str(&src[last..]);
}

/// Lowercases `word` into `out`.
#[inline]
fn lowercase_into(word: &str, out: &mut String) {
    out.clear();
    if word.is_ascii() {
        out.push_str(word);
        out.make_ascii_lowercase();
    } else {
        for c in word.chars() {
            push_lower(out, c);
        }
    }
}

impl Scratch {
    /// Steps 1–6 (and 7's lowercasing when the text has no apostrophe); the result's words are
    /// separated by one or more ASCII spaces. The flag says whether it is already lowercase.
    fn clean_raw(&mut self, text: &str) -> (&str, bool) {
        if !clean_chars(text, &mut self.a, true) {
            return (&self.a, true);
        }
        // An apostrophe: the case-sensitive steps 5–6 need the original case.
        clean_chars(text, &mut self.a, false);
        drop_before_space(&self.a, "'s ", &mut self.b);
        drop_before_space(&self.b, "s' ", &mut self.a);
        split_contractions(&self.a, &mut self.b);
        (&self.b, false)
    }

    fn for_each_token(&mut self, text: &str, f: &mut dyn FnMut(&str) -> bool) {
        // Split borrows: `clean_raw` fills `a`/`b`, tokens that need lowercasing go via `tok`.
        let mut tok = std::mem::take(&mut self.tok);
        let (cleaned, is_lower) = self.clean_raw(text);
        let mut any = false;
        let mut stopped = false;
        let bytes = cleaned.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            // Scan bytes (a space is never part of a multi-byte character): cheaper than
            // `split(' ')` on short texts.
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            let start = i;
            while i < bytes.len() && bytes[i] != b' ' {
                i += 1;
            }
            if start == i {
                break;
            }
            let w = &cleaned[start..i];
            let w = if is_lower {
                w
            } else {
                lowercase_into(w, &mut tok);
                tok.as_str()
            };
            if is_stop_word(w) {
                continue;
            }
            any = true;
            if !f(w) {
                stopped = true;
                break;
            }
        }
        if !any && !stopped {
            for w in text.split_whitespace() {
                lowercase_into(w, &mut tok);
                if !f(&tok) {
                    break;
                }
            }
        }
        self.tok = tok;
    }
}

/// Calls `f` with each token of `text`, in order, exactly as [`tokenize`] would return them,
/// without allocating (buffers are thread-local and reused). Stops early when `f` returns
/// `false`.
pub fn for_each_token(text: &str, mut f: impl FnMut(&str) -> bool) {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => s.for_each_token(text, &mut f),
        // Re-entrant use (a callback that tokenises another text): use fresh buffers.
        Err(_) => Scratch::default().for_each_token(text, &mut f),
    })
}

/// Steps 1–7 of the module doc: the cleaned, lowercased text with its words separated by single
/// spaces. Stop words are still present (they are dropped by [`tokenize`]).
pub fn clean(text: &str) -> String {
    let mut s = Scratch::default();
    let mut out = String::with_capacity(text.len());
    let mut tok = String::new();
    for w in s.clean_raw(text).0.split(' ').filter(|w| !w.is_empty()) {
        lowercase_into(w, &mut tok);
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&tok);
    }
    out
}

/// The tokens of `text`: [`clean`], split, stop words dropped, with the raw-split fallback.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_token(text, |t| {
        out.push(t.to_owned());
        true
    });
    out
}

/// [`tokenize`] for every text, in parallel (rayon), in input order.
pub fn tokenize_all(texts: &[String]) -> Vec<Vec<String>> {
    texts.par_iter().map(|t| tokenize(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        tokenize(s)
    }

    #[test]
    fn underscore_and_punctuation_become_spaces() {
        assert_eq!(clean("snake_case,word;x-y(z)"), "snake case word x y z");
        assert_eq!(clean("tab\there\nnewline"), "tab here newline");
        assert_eq!(clean("a+b=c/d\\e|f"), "a b c d e f");
    }

    #[test]
    fn keeps_quote_backtick_and_dot() {
        assert_eq!(clean("`quoted` 'x'"), "`quoted` 'x'");
        assert_eq!(clean("3.5 .net"), "3.5 .net");
    }

    #[test]
    fn dot_after_letter_is_removed() {
        assert_eq!(clean("U.S.A. etc."), "usa etc");
        assert_eq!(clean("version 2.0"), "version 2.0");
        // Look-behind on the text before removal: only the first dot follows a letter.
        assert_eq!(clean("wait..."), "wait..");
        // `a.1` -> `a1` -> split into `a 1` by the digit/letter rule.
        assert_eq!(clean("a.1"), "a 1");
    }

    #[test]
    fn digit_letter_runs_are_split() {
        assert_eq!(clean("32gb"), "32 gb");
        assert_eq!(clean("mp3 x2y"), "mp 3 x 2 y");
        assert_eq!(clean("3.5GB"), "3.5 gb");
        assert_eq!(clean("1990s"), "1990 s");
        assert_eq!(clean("2024år"), "2024 år");
    }

    #[test]
    fn possessive_s_becomes_space() {
        assert_eq!(clean("cook's book"), "cook book");
        assert_eq!(clean("cats' toys"), "cat toys");
        // Needs the following space (after punctuation became spaces).
        assert_eq!(clean("mom's, pie"), "mom pie");
        assert_eq!(clean("it ends with mom's"), "it ends with mom's");
        // Case-sensitive: lowercasing comes after this rule.
        assert_eq!(clean("MOM'S PIE"), "mom's pie");
        // Sequential: first `'s `, then `s' ` on the result.
        assert_eq!(clean("xs''s y"), "x y");
    }

    #[test]
    fn contractions_become_tokens() {
        assert_eq!(
            clean("they're we've I'd you'll"),
            "they 're we 've i 'd you 'll"
        );
        assert_eq!(toks("they're here"), vec!["'re"]);
        assert_eq!(clean("don't"), "don't");
    }

    #[test]
    fn whitespace_collapsed_and_lowercased() {
        assert_eq!(clean("  Hello   WORLD  "), "hello world");
        assert_eq!(clean(""), "");
        assert_eq!(clean("!!!"), "");
    }

    #[test]
    fn stop_words_dropped_after_lowercasing() {
        assert_eq!(
            toks("How much does potato starch affect a cheese sauce recipe?"),
            vec!["much", "potato", "starch", "affect", "cheese", "sauce", "recipe"]
        );
        assert_eq!(toks("The Cat"), vec!["cat"]);
    }

    #[test]
    fn fallback_to_raw_split() {
        assert_eq!(toks("The And"), vec!["the", "and"]);
        assert_eq!(toks("?!"), vec!["?!"]);
        assert_eq!(
            toks("To be, or not to be"),
            vec!["to", "be,", "or", "not", "to", "be"]
        );
        assert!(toks("").is_empty());
        assert!(toks("   ").is_empty());
    }

    #[test]
    fn unicode_letters_are_kept() {
        assert_eq!(
            toks("Grön kommunikation : hur du bygger värde för varumärket"),
            vec![
                "grön",
                "kommunikation",
                "hur",
                "du",
                "bygger",
                "värde",
                "för",
                "varumärket"
            ]
        );
        assert_eq!(toks("ÅÄÖ-stämning"), vec!["åäö", "stämning"]);
        assert_eq!(toks("Straße №5 «quoted»"), vec!["straße", "5", "quoted"]);
    }

    #[test]
    fn ascii_input_matches_the_ascii_spec_rule() {
        // A direct transcription of steps 1-2 with the spec's ASCII class.
        let s = "Hello, World! It's 3pm_now (1.5kg) -- cats' `x`";
        let ascii: String = s
            .chars()
            .map(|c| {
                if c == '_' || !(c.is_ascii_alphanumeric() || matches!(c, '.' | '\'' | '`')) {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        assert_eq!(clean(s), clean(&ascii));
        assert_eq!(clean(s), "hello world it 3 pm now 1.5 kg cat `x`");
    }

    #[test]
    fn for_each_token_stops_early_and_is_reentrant() {
        let mut seen = Vec::new();
        for_each_token("alpha beta gamma", |t| {
            seen.push(t.to_owned());
            seen.len() < 2
        });
        assert_eq!(seen, vec!["alpha", "beta"]);
        let mut nested = Vec::new();
        for_each_token("outer words", |t| {
            nested.push((t.to_owned(), tokenize("inner text")));
            true
        });
        assert_eq!(nested.len(), 2);
        assert_eq!(nested[1].1, vec!["inner", "text"]);
    }

    /// A literal, slow transcription of the module doc's rules, one step at a time.
    fn reference(text: &str) -> Vec<String> {
        let lower = |w: &str| -> String { w.chars().flat_map(char::to_lowercase).collect() };
        let s: Vec<char> = text
            .chars()
            .map(|c| {
                if c == '_' || !(c.is_alphanumeric() || matches!(c, '.' | '\'' | '`')) {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        let t: Vec<char> = (0..s.len())
            .filter(|&i| !(s[i] == '.' && i > 0 && s[i - 1].is_alphabetic()))
            .map(|i| s[i])
            .collect();
        let letter = |c: char| c.is_alphabetic();
        let digit = |c: char| !c.is_alphabetic() && c.is_numeric();
        let mut u = String::new();
        for (i, &c) in t.iter().enumerate() {
            if i > 0 && ((letter(c) && digit(t[i - 1])) || (digit(c) && letter(t[i - 1]))) {
                u.push(' ');
            }
            u.push(c);
        }
        let mut x = u.replace("'s ", " ").replace("s' ", " ");
        for p in ["'ve", "'re", "'d", "'ll"] {
            x = x.replace(p, &format!(" {p}"));
        }
        let toks: Vec<String> = x
            .split_whitespace()
            .map(lower)
            .filter(|w| !is_stop_word(w))
            .collect();
        if toks.is_empty() {
            text.split_whitespace().map(lower).collect()
        } else {
            toks
        }
    }

    #[test]
    fn matches_reference_on_tricky_strings() {
        for s in [
            "It's JOHN'S 3rd_book: \"Cats' Toys\" (v2.0) -- we'd they'll I've",
            "A.B.C. 1.2.3 x.5 .5 5. a... ...a",
            "ÉCOLE Nº9 straße ΣΊΣΥΦΟΣ İstanbul ǅemal Ⅻ 10ª ½kg",
            "'s 's' s' ' `` ''ll'd 're've",
            "tab\tnew\nline\r\u{a0}nbsp\u{2003}em",
            "The of and",
            "",
            "🙂 emoji 🙂x",
        ] {
            assert_eq!(tokenize(s), reference(s), "{s:?}");
        }
    }

    fn check_reference_on_file(path: &str) {
        let p = std::path::Path::new(path);
        if !p.exists() {
            eprintln!("skipping: {path} not found");
            return;
        }
        let texts = crate::texts::read_texts(p).unwrap();
        let tok = tokenize_all(&texts);
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(tok[i], reference(t), "{path}:{}: {t:?}", i + 1);
        }
    }

    #[test]
    fn matches_reference_on_cooking() {
        check_reference_on_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/cooking/trn_X.txt"
        ));
    }

    #[test]
    fn matches_reference_on_yso_finna_sv() {
        check_reference_on_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/yso_finna_sv/xc/trn_X.txt"
        ));
    }

    #[test]
    fn latin1_fast_paths_agree_with_the_standard_library() {
        for c in (0u32..0x250).filter_map(char::from_u32) {
            let k = kind(c);
            let expect = if c.is_ascii() {
                if c.is_ascii_alphabetic() {
                    Kind::Letter
                } else if c.is_ascii_digit() {
                    Kind::Digit
                } else {
                    Kind::Other
                }
            } else if c.is_alphabetic() {
                Kind::Letter
            } else if c.is_numeric() {
                Kind::Digit
            } else {
                Kind::Other
            };
            assert!(k == expect, "kind of {c:?}");
            let mut got = String::new();
            push_lower(&mut got, c);
            assert_eq!(
                got,
                c.to_lowercase().collect::<String>(),
                "lowercase of {c:?}"
            );
        }
    }

    #[test]
    fn tokenize_all_keeps_order() {
        let texts: Vec<String> = (0..1000).map(|i| format!("item{i} The")).collect();
        let all = tokenize_all(&texts);
        for (i, t) in all.iter().enumerate() {
            assert_eq!(t, &vec!["item".to_owned(), i.to_string()]);
        }
    }
}
