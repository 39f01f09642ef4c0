//! Turning a review into the token ids the model reads, identically in training and inference.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tokenizers::{Encoding, PostProcessor, Tokenizer};

/// Why a review could not be encoded, or a tokenizer not loaded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The tokenizer.json bytes are not a tokenizer the `tokenizers` crate can read.
    #[error("tokenizer.json is not a valid Hugging Face tokenizer: {0}")]
    Tokenizer(String),
    /// The sequence length cannot hold the special tokens plus one token of text.
    #[error("sequence length {seq_len} is too short: it must hold {special} special tokens and at least one token of text")]
    SeqLenTooShort {
        /// The requested sequence length.
        seq_len: usize,
        /// How many special tokens the tokenizer adds.
        special: usize,
    },
    /// The tokenizer failed on one input.
    #[error("could not tokenize the review: {0}")]
    Encode(String),
}

/// Which tokens to keep when a review is longer than the sequence length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Truncation {
    /// Keep the beginning of the review (the usual truncation).
    #[default]
    #[serde(rename = "tail")]
    Tail,
    /// Keep the first quarter and the last three quarters of the budget: the opening and the
    /// verdict of a long review (Sun et al. 2019, "How to Fine-Tune BERT for Text
    /// Classification?", found this best on IMDB).
    #[serde(rename = "head+tail")]
    HeadTail,
}

impl fmt::Display for Truncation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Truncation::Tail => "tail",
            Truncation::HeadTail => "head+tail",
        })
    }
}

impl FromStr for Truncation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tail" => Ok(Truncation::Tail),
            "head+tail" | "head-tail" => Ok(Truncation::HeadTail),
            other => Err(format!(
                "unknown truncation '{other}': use 'tail' or 'head+tail'"
            )),
        }
    }
}

/// A review as model input: token ids including the special tokens, at most `seq_len` long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedReview {
    /// Token ids, `[CLS] ... [SEP]` for a BERT tokenizer; never longer than the sequence length.
    pub ids: Vec<u32>,
    /// How many tokens the whole review has, special tokens included, before truncation.
    pub full_len: usize,
}

impl EncodedReview {
    /// Whether tokens were cut to fit the sequence length.
    pub fn truncated(&self) -> bool {
        self.full_len > self.ids.len()
    }
}

/// The line breaks [`clean_review`] replaces, as a regular expression (JavaScript, Oniguruma and
/// fancy-regex read it alike): for tokenizers that clean the text themselves, e.g. a `Replace`
/// normaliser in the `tokenizer.json` that `feelings export --layout hf` writes.
pub const LINE_BREAK_PATTERN: &str = "<[bB][rR](?: ?/)?>";

/// Replaces the HTML line breaks the IMDB reviews are full of (`<br />`, `<br/>`, `<br>`, any
/// case) with a space. Everything else is left to the tokenizer's own normaliser.
pub fn clean_review(text: &str) -> String {
    clean_review_with_origins(text).0
}

/// [`clean_review`]'s text, and for each of its bytes (and one past its end) the byte of `text`
/// it came from: a line break's space maps to the break's first byte.
fn clean_review_with_origins(text: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut origins = Vec::with_capacity(text.len() + 1);
    let mut at = 0;
    while at < text.len() {
        let next = find_ascii_case_insensitive(&text[at..], "<br").map_or(text.len(), |f| at + f);
        // The text before the next "<br", then the break as a space or "<br" as it is.
        let (copied, replaced) = match line_break_at(&text[next..]) {
            Some(len) => (next, Some(len)),
            None => ((next + 3).min(text.len()), None),
        };
        out.push_str(&text[at..copied]);
        origins.extend(at..copied);
        at = copied;
        if let Some(len) = replaced {
            out.push(' ');
            origins.push(at);
            at += len;
        }
    }
    origins.push(text.len());
    (out, origins)
}

/// The length in bytes of the HTML line break (see [`clean_review`]) `text` starts with, if it
/// starts with one.
pub(crate) fn line_break_at(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.len() < 4 || !bytes[..3].eq_ignore_ascii_case(b"<br") {
        return None;
    }
    ["/>", " />", ">"]
        .iter()
        .find(|end| text[3..].starts_with(**end))
        .map(|end| 3 + end.len())
}

fn find_ascii_case_insensitive(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The padding tokens of BERT's WordPiece and XLM-R's SentencePiece vocabularies, for a
/// `tokenizer.json` that sets no padding.
const PAD_TOKENS: [&str; 2] = ["[PAD]", "<pad>"];

/// A tokenizer plus the sequence length and truncation a model was trained with.
#[derive(Clone)]
pub struct ReviewEncoder {
    tokenizer: Tokenizer,
    seq_len: usize,
    truncation: Truncation,
    pad_id: u32,
}

impl ReviewEncoder {
    /// Builds an encoder from the bytes of a Hugging Face `tokenizer.json`.
    ///
    /// Any truncation or padding fixed in the file is switched off: this encoder truncates to
    /// `seq_len` itself and batches are padded by whoever builds them.
    pub fn from_bytes(
        tokenizer_json: &[u8],
        seq_len: usize,
        truncation: Truncation,
    ) -> Result<Self, EncodeError> {
        let mut tokenizer = Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| PAD_TOKENS.iter().find_map(|t| tokenizer.token_to_id(t)))
            .unwrap_or(0);
        tokenizer
            .with_truncation(None)
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let special = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if seq_len < special + 1 {
            return Err(EncodeError::SeqLenTooShort { seq_len, special });
        }
        Ok(Self {
            tokenizer,
            seq_len,
            truncation,
            pad_id,
        })
    }

    /// The longest sequence this encoder produces, special tokens included.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Which part of a long review is kept.
    pub fn truncation(&self) -> Truncation {
        self.truncation
    }

    /// The size of the tokenizer's vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The id of the padding token: the one `tokenizer.json`'s padding names, else WordPiece's
    /// `[PAD]` or SentencePiece's `<pad>` (1 in XLM-R's vocabulary), else 0.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Cleans, tokenizes and truncates one review.
    pub fn encode(&self, text: &str) -> Result<EncodedReview, EncodeError> {
        let encoding = self
            .tokenizer
            .encode(clean_review(text), true)
            .map_err(|e| EncodeError::Encode(e.to_string()))?;
        Ok(self.cut(&encoding))
    }

    /// Cleans, tokenizes and truncates many reviews, in parallel where threads exist.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<EncodedReview>, EncodeError> {
        let cleaned: Vec<String> = texts.iter().map(|t| clean_review(t)).collect();
        let encodings = self
            .tokenizer
            .encode_batch(cleaned, true)
            .map_err(|e| EncodeError::Encode(e.to_string()))?;
        Ok(encodings.iter().map(|e| self.cut(e)).collect())
    }

    /// The tokens the model reads of `text` (cleaned and cut as [`ReviewEncoder::encode`]
    /// does), with their byte offsets in the cleaned review (none for special tokens); and how
    /// many tokens the whole review has.
    pub fn tokens(&self, text: &str) -> Result<(Vec<Token>, usize), EncodeError> {
        let encoding = self
            .tokenizer
            .encode(clean_review(text), true)
            .map_err(|e| EncodeError::Encode(e.to_string()))?;
        let (ids, texts) = (encoding.get_ids(), encoding.get_tokens());
        let (special, offsets) = (encoding.get_special_tokens_mask(), encoding.get_offsets());
        let tokens = self
            .kept(&encoding)
            .into_iter()
            .map(|i| {
                let is_special = special[i] == 1;
                Token {
                    id: ids[i],
                    text: texts[i].clone(),
                    special: is_special,
                    start: (!is_special).then_some(offsets[i].0),
                    stop: (!is_special).then_some(offsets[i].1),
                }
            })
            .collect();
        Ok((tokens, ids.len()))
    }

    /// The parts of `text` (byte ranges of the review as given, line breaks included) that the
    /// model reads once it is cleaned and cut as [`ReviewEncoder::encode`] does: the whole
    /// review in one part if it fits, else one part per stretch the truncation keeps (for
    /// head+tail, the opening and the end).
    pub fn read_parts(&self, text: &str) -> Result<Vec<Range<usize>>, EncodeError> {
        let (cleaned, origins) = clean_review_with_origins(text);
        let encoding = self
            .tokenizer
            .encode(cleaned.as_str(), true)
            .map_err(|e| EncodeError::Encode(e.to_string()))?;
        let (special, offsets) = (encoding.get_special_tokens_mask(), encoding.get_offsets());
        let mut parts: Vec<Range<usize>> = Vec::new();
        let mut previous: Option<usize> = None;
        for i in self
            .kept(&encoding)
            .into_iter()
            .filter(|&i| special[i] == 0)
        {
            let (start, end) = (origins[offsets[i].0], origins[offsets[i].1]);
            match parts.last_mut() {
                Some(part) if previous == Some(i - 1) => part.end = part.end.max(end),
                _ => parts.push(start..end),
            }
            previous = Some(i);
        }
        Ok(parts)
    }

    /// Keeps the special tokens around the text and cuts the text to the budget.
    fn cut(&self, encoding: &Encoding) -> EncodedReview {
        let ids = encoding.get_ids();
        EncodedReview {
            ids: self.kept(encoding).into_iter().map(|i| ids[i]).collect(),
            full_len: ids.len(),
        }
    }

    /// The positions of the tokens the model reads: the special tokens around the text, and
    /// the text's tokens within the budget, as the truncation keeps them.
    fn kept(&self, encoding: &Encoding) -> Vec<usize> {
        let special = encoding.get_special_tokens_mask();
        let len = special.len();
        let front = special.iter().take_while(|&&s| s == 1).count();
        let back = special[front..]
            .iter()
            .rev()
            .take_while(|&&s| s == 1)
            .count();
        let content = front..len - back;
        let budget = self.seq_len.saturating_sub(front + back);
        let mut out: Vec<usize> = (0..front).collect();
        if content.len() <= budget {
            out.extend(content);
        } else {
            let head = match self.truncation {
                Truncation::Tail => budget,
                Truncation::HeadTail => budget / 4,
            };
            out.extend(content.start..content.start + head);
            out.extend(content.end - (budget - head)..content.end);
        }
        out.extend(len - back..len);
        out
    }
}

/// One token of a review as the model reads it (text-embeddings-inference's `/tokenize`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Its id in the vocabulary.
    pub id: u32,
    /// The token (`##` marks a word piece that continues a word).
    pub text: String,
    /// Whether it is a special token (`[CLS]`, `[SEP]`).
    pub special: bool,
    /// Where it starts in the cleaned review, in bytes (none for a special token).
    pub start: Option<usize>,
    /// Where it ends in the cleaned review, in bytes (none for a special token).
    pub stop: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level BERT-style tokenizer: each of the words below is one token.
    fn tokenizer_json() -> String {
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "c", "d", "e", "f", "g", "h",
        ];
        let vocab: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(i, w)| format!("\"{w}\": {i}"))
            .collect();
        format!(
            r###"{{"version":"1.0","truncation":{{"direction":"Right","max_length":4,"strategy":"LongestFirst","stride":0}},
            "padding":null,"added_tokens":[],
            "normalizer":{{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":true}},
            "pre_tokenizer":{{"type":"BertPreTokenizer"}},
            "post_processor":{{"type":"TemplateProcessing",
              "single":[{{"SpecialToken":{{"id":"[CLS]","type_id":0}}}},{{"Sequence":{{"id":"A","type_id":0}}}},{{"SpecialToken":{{"id":"[SEP]","type_id":0}}}}],
              "pair":[{{"Sequence":{{"id":"A","type_id":0}}}},{{"Sequence":{{"id":"B","type_id":1}}}}],
              "special_tokens":{{"[CLS]":{{"id":"[CLS]","ids":[2],"tokens":["[CLS]"]}},"[SEP]":{{"id":"[SEP]","ids":[3],"tokens":["[SEP]"]}}}}}},
            "decoder":null,
            "model":{{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,"vocab":{{{}}}}}}}"###,
            vocab.join(",")
        )
    }

    /// An XLM-R-style SentencePiece (Unigram) tokenizer: `<s>` = 0 opens, `<pad>` = 1,
    /// `</s>` = 2 closes, pieces marked with "▁" at the start of a word; `padding` as given.
    fn unigram_json(padding: &str) -> String {
        let pieces = [
            ("<s>", 0.0),
            ("<pad>", 0.0),
            ("</s>", 0.0),
            ("<unk>", 0.0),
            ("▁", -2.0),
            ("▁le", -3.0),
            ("▁film", -3.0),
            ("▁était", -4.0),
            ("▁super", -4.0),
            ("b", -5.0),
            ("e", -5.0),
        ];
        let vocab: Vec<String> = pieces
            .iter()
            .map(|(p, score)| format!("[\"{p}\", {score}]"))
            .collect();
        let special =
            |t: &str, id: u32| format!(r#""{t}":{{"id":"{t}","ids":[{id}],"tokens":["{t}"]}}"#);
        format!(
            r###"{{"version":"1.0","truncation":null,"padding":{padding},"added_tokens":[],
            "normalizer":null,
            "pre_tokenizer":{{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true}},
            "post_processor":{{"type":"TemplateProcessing",
              "single":[{{"SpecialToken":{{"id":"<s>","type_id":0}}}},{{"Sequence":{{"id":"A","type_id":0}}}},{{"SpecialToken":{{"id":"</s>","type_id":0}}}}],
              "pair":[{{"Sequence":{{"id":"A","type_id":0}}}},{{"Sequence":{{"id":"B","type_id":0}}}}],
              "special_tokens":{{{},{}}}}},
            "decoder":null,
            "model":{{"type":"Unigram","unk_id":3,"byte_fallback":false,"vocab":[{}]}}}}"###,
            special("<s>", 0),
            special("</s>", 2),
            vocab.join(",")
        )
    }

    #[test]
    fn a_sentencepiece_tokenizer_brings_its_own_special_tokens_and_padding() {
        let json = unigram_json("null");
        let e = ReviewEncoder::from_bytes(json.as_bytes(), 5, Truncation::Tail).unwrap();
        assert_eq!(e.pad_id(), 1, "XLM-R's <pad>, not WordPiece's 0");
        let review = e.encode("le film<br />était super").unwrap();
        assert_eq!(review.ids, vec![0, 5, 6, 7, 2], "<s> ▁le ▁film ▁était </s>");
        assert_eq!(review.full_len, 6);
        let (tokens, _) = e.tokens("le film").unwrap();
        let specials: Vec<bool> = tokens.iter().map(|t| t.special).collect();
        assert_eq!(specials, [true, false, false, true]);
        // A padding the file sets wins over the token's name.
        let padded = unigram_json(
            r#"{"strategy":"BatchLongest","direction":"Right","pad_to_multiple_of":null,"pad_id":3,"pad_type_id":0,"pad_token":"<unk>"}"#,
        );
        let e = ReviewEncoder::from_bytes(padded.as_bytes(), 8, Truncation::Tail).unwrap();
        assert_eq!(e.pad_id(), 3);
        assert_eq!(e.encode("le film").unwrap().ids, vec![0, 5, 6, 2]);
    }

    fn encoder(seq_len: usize, truncation: Truncation) -> ReviewEncoder {
        ReviewEncoder::from_bytes(tokenizer_json().as_bytes(), seq_len, truncation).unwrap()
    }

    #[test]
    fn cleans_html_line_breaks_only() {
        assert_eq!(clean_review("a<br />b<BR/>c<br>d"), "a b c d");
        assert_eq!(clean_review("<bro> <b>x</b>"), "<bro> <b>x</b>");
        assert_eq!(clean_review("é<br />ü"), "é ü");
    }

    #[test]
    fn short_review_keeps_every_token_and_ignores_the_files_truncation() {
        let e = encoder(16, Truncation::Tail)
            .encode("A b<br />c d e")
            .unwrap();
        assert_eq!(e.ids, vec![2, 4, 5, 6, 7, 8, 3]);
        assert_eq!(e.full_len, 7);
        assert!(!e.truncated());
    }

    #[test]
    fn tail_truncation_keeps_the_beginning() {
        let e = encoder(6, Truncation::Tail)
            .encode("a b c d e f g h")
            .unwrap();
        assert_eq!(e.ids, vec![2, 4, 5, 6, 7, 3]);
        assert_eq!(e.full_len, 10);
        assert!(e.truncated());
    }

    #[test]
    fn tokens_are_the_ones_the_model_reads_with_their_offsets() {
        let (tokens, full_len) = encoder(4, Truncation::Tail).tokens("a<br />b c").unwrap();
        assert_eq!(full_len, 5);
        let token = |id, text: &str, offsets: Option<(usize, usize)>| Token {
            id,
            text: text.into(),
            special: offsets.is_none(),
            start: offsets.map(|o| o.0),
            stop: offsets.map(|o| o.1),
        };
        assert_eq!(
            tokens,
            [
                token(2, "[CLS]", None),
                token(4, "a", Some((0, 1))),
                token(5, "b", Some((2, 3))),
                token(3, "[SEP]", None),
            ]
        );
    }

    #[test]
    fn head_tail_truncation_keeps_a_quarter_of_the_beginning_and_the_end() {
        // budget 8 tokens: 2 from the head, 6 from the tail.
        let e = encoder(10, Truncation::HeadTail)
            .encode("a b c d e f g h a b c d")
            .unwrap();
        assert_eq!(e.ids, vec![2, 4, 5, 10, 11, 4, 5, 6, 7, 3]);
    }

    #[test]
    fn read_parts_are_the_kept_tokens_in_the_review_as_given() {
        let text = "a b<br />c d e f g h";
        let whole = encoder(16, Truncation::HeadTail).read_parts(text).unwrap();
        assert_eq!(whole.len(), 1, "a review that fits is read whole");
        assert_eq!(whole[0], 0..text.len());
        // Budget 4: 1 token from the head ("a"), 3 from the tail ("f g h").
        let cut = encoder(6, Truncation::HeadTail).read_parts(text).unwrap();
        let read: Vec<&str> = cut.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(read, ["a", "f g h"]);
        // The line break's offsets are the original's: "b<br />c" read as one stretch.
        let tail = encoder(5, Truncation::Tail).read_parts(text).unwrap();
        assert_eq!(
            tail.iter().map(|r| &text[r.clone()]).collect::<Vec<_>>(),
            ["a b<br />c"]
        );
        assert!(encoder(6, Truncation::Tail)
            .read_parts("")
            .unwrap()
            .is_empty());
        assert_eq!(clean_review_with_origins("é<BR>x").1, [0, 1, 2, 6, 7]);
    }

    #[test]
    fn batch_and_single_encoding_agree() {
        let enc = encoder(5, Truncation::HeadTail);
        let texts = ["a b c d e f", "", "h", "  \u{0} \u{202e}é 😀"];
        let batch = enc.encode_batch(&texts).unwrap();
        for (text, b) in texts.iter().zip(&batch) {
            assert_eq!(&enc.encode(text).unwrap(), b);
            assert!(b.ids.len() <= 5);
        }
        assert_eq!(batch[1].ids, vec![2, 3]);
    }

    #[test]
    fn refuses_a_sequence_length_without_room_for_text() {
        let err = ReviewEncoder::from_bytes(tokenizer_json().as_bytes(), 2, Truncation::Tail)
            .err()
            .unwrap();
        assert!(err.to_string().contains("too short"), "{err}");
        let err = ReviewEncoder::from_bytes(b"{not json", 8, Truncation::Tail)
            .err()
            .unwrap();
        assert!(matches!(err, EncodeError::Tokenizer(_)));
    }

    #[test]
    fn truncation_parses_and_prints() {
        assert_eq!(
            "head+tail".parse::<Truncation>().unwrap(),
            Truncation::HeadTail
        );
        assert_eq!(Truncation::HeadTail.to_string(), "head+tail");
        assert!("middle".parse::<Truncation>().is_err());
        assert_eq!(
            serde_json::to_string(&Truncation::HeadTail).unwrap(),
            "\"head+tail\""
        );
    }
}
