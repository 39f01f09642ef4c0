//! The browser build: the classifier exported to JavaScript with wasm-bindgen.
//!
//! ```js
//! import init, { Classifier } from './pkg/feelings_core.js';
//! await init();
//! const c = Classifier.fromBundle(manifestBytes, modelBytes, tokenizerBytes);
//! c.classify("Loved it!");            // { label, score, threshold, truncated }
//! c.classifyBatch(["Great", "Awful"]); // [ {...}, {...} ]
//! c.explain("Loved it, but too long."); // { score, granularity, units: [{ text, weight, ... }] }
//! c.readParts(longReview);            // [{ start, end }, ...]: what the model reads of it
//! ```
//! Errors become JavaScript `Error`s; a panic is reported on the console (and as an error)
//! instead of killing the page silently.

use wasm_bindgen::prelude::*;

use crate::{Bundle, TractClassifier};

/// Installs the panic hook when the module is instantiated.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// A stretch of a JavaScript string, in UTF-16 code units.
#[derive(serde::Serialize)]
struct Utf16Range {
    start: usize,
    end: usize,
}

/// A review classifier built from a model bundle.
#[wasm_bindgen(js_name = Classifier)]
pub struct WebClassifier {
    inner: TractClassifier,
}

fn js_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

#[wasm_bindgen(js_class = Classifier)]
impl WebClassifier {
    /// Checks and loads a bundle from the bytes of `feelings.json`, `model.onnx` and
    /// `tokenizer.json`.
    #[wasm_bindgen(js_name = fromBundle)]
    pub fn from_bundle(
        manifest: &[u8],
        model: Vec<u8>,
        tokenizer: Vec<u8>,
    ) -> Result<WebClassifier, JsError> {
        let bundle = Bundle::from_bytes(manifest, model, tokenizer).map_err(js_error)?;
        Ok(Self {
            inner: TractClassifier::new(&bundle).map_err(js_error)?,
        })
    }

    /// Classifies one review: `{ label, score, threshold, truncated }`, where `score` is the
    /// probability of the positive class.
    pub fn classify(&self, text: &str) -> Result<JsValue, JsError> {
        let prediction = self.inner.classify(text).map_err(js_error)?;
        serde_wasm_bindgen::to_value(&prediction).map_err(js_error)
    }

    /// Classifies many reviews, in order.
    #[wasm_bindgen(js_name = classifyBatch)]
    pub fn classify_batch(&self, texts: Vec<String>) -> Result<JsValue, JsError> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let predictions = self.inner.classify_batch(&refs).map_err(js_error)?;
        serde_wasm_bindgen::to_value(&predictions).map_err(js_error)
    }

    /// Why a review gets its score: `{ score, granularity, units: [{ text, start, end, weight
    /// }] }`, each unit left out in turn (at most `max_units`, 48 if not given; see the crate's
    /// `explain` module). `start` and `end` are UTF-8 byte offsets in `text`.
    pub fn explain(&self, text: &str, max_units: Option<usize>) -> Result<JsValue, JsError> {
        let max_units = max_units.unwrap_or(crate::explain::DEFAULT_MAX_UNITS);
        let explanation = self.inner.explain(text, max_units).map_err(js_error)?;
        serde_wasm_bindgen::to_value(&explanation).map_err(js_error)
    }

    /// The parts of `text` the model reads, as `[{ start, end }]` in UTF-16 code units (the
    /// offsets of JavaScript strings): the whole review if it fits, else the stretches the
    /// bundle's truncation keeps (see the crate's `ReviewEncoder::read_parts`).
    #[wasm_bindgen(js_name = readParts)]
    pub fn read_parts(&self, text: &str) -> Result<JsValue, JsError> {
        let utf16 = |byte: usize| text[..byte].encode_utf16().count();
        let parts: Vec<Utf16Range> = self
            .inner
            .encoder()
            .read_parts(text)
            .map_err(js_error)?
            .into_iter()
            .map(|r| Utf16Range {
                start: utf16(r.start),
                end: utf16(r.end),
            })
            .collect();
        serde_wasm_bindgen::to_value(&parts).map_err(js_error)
    }

    /// The bundle's manifest as a plain object.
    pub fn manifest(&self) -> Result<JsValue, JsError> {
        serde_wasm_bindgen::to_value(self.inner.manifest()).map_err(js_error)
    }
}
