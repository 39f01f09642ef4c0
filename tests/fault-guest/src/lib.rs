//! A misbehaving classifier for the gateway's fault tests, built by `web/build.sh` for
//! wasm32-wasip2: it exports the world of `wasm-app/wit/feelings.wit`, and its `classify` loops
//! forever on the text "loop", allocates until memory runs out on "eat", and otherwise answers
//! every text negative with score 0.25. Empty on other targets.

#[cfg(target_os = "wasi")]
mod guest {
    wit_bindgen::generate!({ world: "classifier", path: "../../wasm-app/wit" });

    use exports::feelings::classifier::classify::{Guest as ClassifyGuest, Prediction};

    struct Faulty;

    impl Guest for Faulty {
        fn warm_up() {}
    }

    impl ClassifyGuest for Faulty {
        fn load(_: Vec<u8>, _: Vec<u8>, _: Vec<u8>) -> Result<(), String> {
            Ok(())
        }

        fn classify(texts: Vec<String>) -> Result<Vec<Prediction>, String> {
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
                _ => Ok(texts
                    .iter()
                    .map(|_| Prediction {
                        label: "negative".into(),
                        score: 0.25,
                        threshold: 0.5,
                        truncated: false,
                    })
                    .collect()),
            }
        }
    }

    export!(Faulty);
}
