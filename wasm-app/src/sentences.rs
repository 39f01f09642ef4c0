//! A review's words and sentences: where each begins and ends, found the same way wherever it
//! matters (explanations leave them out, training crops windows of them, evaluation keeps a
//! review's first or last few).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::encode::line_break_at;

/// A unit's place in the review as given: byte offsets, `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// The first byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// A word and whether a sentence ends after it.
pub(crate) struct Word {
    /// Where it is.
    pub span: Span,
    /// Whether a sentence ends after it.
    pub ends_sentence: bool,
}

/// The words of `text`: runs of characters between whitespace and HTML line breaks; a sentence
/// ends after a word ending in `.`, `!`, `?` or `…` (closing quotes and brackets aside) and at
/// every line break or newline.
pub(crate) fn words(text: &str) -> Vec<Word> {
    let mut words: Vec<Word> = Vec::new();
    let mut start: Option<usize> = None;
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let (gap, breaks_line) = match line_break_at(rest) {
            Some(len) => (len, true),
            None => {
                let c = rest.chars().next().expect("at is below the length");
                (if c.is_whitespace() { c.len_utf8() } else { 0 }, c == '\n')
            }
        };
        if gap == 0 {
            start.get_or_insert(at);
            at += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        }
        if let Some(s) = start.take() {
            words.push(word(text, s, at));
        }
        if breaks_line {
            if let Some(last) = words.last_mut() {
                last.ends_sentence = true;
            }
        }
        at += gap;
    }
    if let Some(s) = start {
        words.push(word(text, s, text.len()));
    }
    words
}

fn word(text: &str, start: usize, end: usize) -> Word {
    let closing: &[char] = &['"', '\'', ')', ']', '”', '’', '»'];
    let bare = text[start..end].trim_end_matches(closing);
    Word {
        span: Span { start, end },
        ends_sentence: bare.ends_with(['.', '!', '?', '…']),
    }
}

/// The sentences the words make (see [`words`]).
pub(crate) fn sentences(words: &[Word]) -> Vec<Span> {
    let mut sentences = Vec::new();
    let mut start = None;
    for w in words {
        let s = *start.get_or_insert(w.span.start);
        if w.ends_sentence {
            sentences.push(Span {
                start: s,
                end: w.span.end,
            });
            start = None;
        }
    }
    if let (Some(s), Some(last)) = (start, words.last()) {
        sentences.push(Span {
            start: s,
            end: last.span.end,
        });
    }
    sentences
}

/// The sentences of `text`, in order: words up to one ending in `.`, `!`, `?` or `…` (closing
/// quotes and brackets aside), or up to a line break (`<br />` or a newline).
pub fn sentence_spans(text: &str) -> Vec<Span> {
    sentences(&words(text))
}

/// The part of `text` from the start of the first of `spans` to the end of the last, as
/// written (line breaks between them kept); `text` itself when `spans` is empty.
pub fn passage<'a>(text: &'a str, spans: &[Span]) -> &'a str {
    match (spans.first(), spans.last()) {
        (Some(first), Some(last)) => &text[first.start..last.end],
        _ => text,
    }
}

/// Which sentences of a review to keep: its first or its last few. Written (and serialised)
/// as `first:N` or `last:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Excerpt {
    /// The first this many sentences.
    First(usize),
    /// The last this many sentences.
    Last(usize),
}

impl Excerpt {
    /// The kept sentences of `text` as written (all of it when it has no more).
    pub fn of(self, text: &str) -> &str {
        let spans = sentence_spans(text);
        let kept = match self {
            Excerpt::First(n) => &spans[..n.min(spans.len())],
            Excerpt::Last(n) => &spans[spans.len().saturating_sub(n)..],
        };
        passage(text, kept)
    }
}

/// The text of an [`Excerpt`] that is not `first:N` or `last:N` with N at least 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not first:N or last:N with N a whole number from 1 (e.g. last:2)")]
pub struct BadExcerpt(String);

impl FromStr for Excerpt {
    type Err = BadExcerpt;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadExcerpt(s.to_string());
        let (which, count) = s.split_once(':').ok_or_else(bad)?;
        let digits = !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit());
        let count: usize = count
            .parse()
            .ok()
            .filter(|&n| digits && n >= 1)
            .ok_or_else(bad)?;
        match which {
            "first" => Ok(Excerpt::First(count)),
            "last" => Ok(Excerpt::Last(count)),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for Excerpt {
    type Error = BadExcerpt;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Excerpt> for String {
    fn from(excerpt: Excerpt) -> Self {
        excerpt.to_string()
    }
}

impl fmt::Display for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Excerpt::First(n) => write!(f, "first:{n}"),
            Excerpt::Last(n) => write!(f, "last:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(text: &'a str, spans: &[Span]) -> Vec<&'a str> {
        spans.iter().map(|s| &text[s.start..s.end]).collect()
    }

    #[test]
    fn sentences_end_at_final_punctuation_and_at_line_breaks() {
        let text =
            "I expected to hate it. But \"wow!\" Won over…<br /><br />Ten out of ten\nReally";
        assert_eq!(
            texts(text, &sentence_spans(text)),
            [
                "I expected to hate it.",
                "But \"wow!\"",
                "Won over…",
                "Ten out of ten",
                "Really"
            ]
        );
        assert!(sentence_spans(" <br /> \n").is_empty());
    }

    #[test]
    fn an_excerpt_keeps_the_first_or_last_sentences_as_written() {
        let text = "Dull start. Then<br />it soars! A gem.";
        assert_eq!(Excerpt::First(2).of(text), "Dull start. Then");
        assert_eq!(Excerpt::Last(2).of(text), "it soars! A gem.");
        assert_eq!(Excerpt::Last(3).of(text), "Then<br />it soars! A gem.");
        assert_eq!(
            Excerpt::First(9).of(text),
            text,
            "all of a review with fewer sentences"
        );
        assert_eq!(
            Excerpt::Last(1).of("  "),
            "  ",
            "a text without words stays as it is"
        );
    }

    #[test]
    fn excerpts_are_written_as_first_or_last_and_a_count() {
        for (written, excerpt) in [("first:2", Excerpt::First(2)), ("last:1", Excerpt::Last(1))] {
            assert_eq!(written.parse::<Excerpt>(), Ok(excerpt));
            assert_eq!(excerpt.to_string(), written);
        }
        for bad in [
            "first", "last:0", "middle:2", "first:-1", "first:+2", "first:x", "",
        ] {
            assert!(bad.parse::<Excerpt>().is_err(), "{bad} is refused");
        }
        let json = serde_json::to_string(&Excerpt::Last(2)).unwrap();
        assert_eq!(json, r#""last:2""#);
        assert_eq!(
            serde_json::from_str::<Excerpt>(&json).unwrap(),
            Excerpt::Last(2)
        );
        assert!(serde_json::from_str::<Excerpt>(r#""last:0""#).is_err());
    }
}
