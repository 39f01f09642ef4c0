//! A misbehaving classifier for the gateway's fault tests, built by `web/build.sh` for
//! wasm32-wasip2: it exports the world of `wasm-app/wit/feelings.wit`, and answers every text
//! negative with score 0.25, except when the first text asks for a fault:
//!
//! | first text | what `classify` does |
//! | --- | --- |
//! | `loop` | loops forever |
//! | `eat` | allocates until memory runs out |
//! | `short` | answers one prediction too few |
//! | `nan` | answers a score that is not a number |
//! | `liar` | labels a 0.25 score positive |
//! | `count` | scores the first text 0.01 × the calls this instance has answered, this one included |
//!
//! and a text `slow N` takes N milliseconds of busy work before its answer (a review that
//! costs that much). Empty on other targets.

#[cfg(target_os = "wasi")]
mod guest {
    wit_bindgen::generate!({ world: "classifier", path: "../../wasm-app/wit" });

    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use exports::feelings::classifier::classify::{Guest as ClassifyGuest, Prediction};

    struct Faulty;

    /// `classify` calls this instance has had: state that only a reused sandbox keeps.
    static CALLS: AtomicU32 = AtomicU32::new(0);

    impl Guest for Faulty {
        fn warm_up() {}
    }

    fn negative() -> Prediction {
        Prediction {
            label: "negative".into(),
            score: 0.25,
            threshold: 0.5,
            truncated: false,
        }
    }

    /// Busy work for `slow N` texts.
    fn cost(text: &str) {
        let Some(ms) = text
            .strip_prefix("slow ")
            .and_then(|n| n.trim().parse().ok())
        else {
            return;
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(ms) {
            std::hint::black_box(text);
        }
    }

    impl ClassifyGuest for Faulty {
        fn load(_: Vec<u8>, _: Vec<u8>, _: Vec<u8>) -> Result<(), String> {
            Ok(())
        }

        fn classify(texts: Vec<String>) -> Result<Vec<Prediction>, String> {
            let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
            let mut answers: Vec<Prediction> = texts
                .iter()
                .map(|text| {
                    cost(text);
                    negative()
                })
                .collect();
            match texts.first().map(String::as_str) {
                Some("loop") => loop {
                    std::hint::black_box(&texts);
                },
                Some("eat") => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                Some("short") => {
                    answers.pop();
                }
                Some("nan") => answers[0].score = f32::NAN,
                Some("liar") => answers[0].label = "positive".into(),
                Some("count") => answers[0].score = calls as f32 / 100.0,
                _ => {}
            }
            Ok(answers)
        }
    }

    export!(Faulty);
}
