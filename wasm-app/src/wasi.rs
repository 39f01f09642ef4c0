//! The server build: the classifier as a WebAssembly component (wasm32-wasip2) exporting the
//! `feelings:classifier/classify` interface of `wit/feelings.wit`. A component linking this
//! crate exports that interface too; [`with_loaded`] gives it the loaded classifier.

use std::cell::RefCell;

use crate::{Bundle, TractClassifier};

wit_bindgen::generate!({ world: "classifier", path: "wit" });

use exports::feelings::classifier::classify::{Guest as ClassifyGuest, Prediction};

thread_local! {
    /// The loaded classifier; the component runs on one thread.
    static LOADED: RefCell<Option<TractClassifier>> = const { RefCell::new(None) };
}

/// Runs `with` on the loaded classifier (`None` before `load`): how another handler of a
/// component built on this crate (the `wasi:http` one) reaches the model its host snapshotted.
pub fn with_loaded<R>(with: impl FnOnce(Option<&TractClassifier>) -> R) -> R {
    LOADED.with(|slot| with(slot.borrow().as_ref()))
}

struct Component;

impl Guest for Component {
    fn warm_up() {
        LOADED.with(|slot| {
            if let Some(classifier) = slot.borrow().as_ref() {
                // The answer is irrelevant; a failure here would show on the first request.
                let _ = classifier.classify("A warm-up review: good.");
            }
        });
    }
}

impl ClassifyGuest for Component {
    fn load(manifest: Vec<u8>, model: Vec<u8>, tokenizer: Vec<u8>) -> Result<(), String> {
        let bundle = Bundle::from_bytes(&manifest, model, tokenizer).map_err(|e| e.to_string())?;
        let classifier = TractClassifier::new(&bundle).map_err(|e| e.to_string())?;
        LOADED.with(|slot| *slot.borrow_mut() = Some(classifier));
        Ok(())
    }

    fn classify(texts: Vec<String>) -> Result<Vec<Prediction>, String> {
        LOADED.with(|slot| {
            let slot = slot.borrow();
            let classifier = slot
                .as_ref()
                .ok_or("no model bundle is loaded: call load first")?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let predictions = classifier
                .classify_batch(&refs)
                .map_err(|e| e.to_string())?;
            Ok(predictions
                .into_iter()
                .map(|p| crate::prediction_as!(Prediction, p))
                .collect())
        })
    }
}

export!(Component);
