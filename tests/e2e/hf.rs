//! Hugging Face's contracts beside ours: text-embeddings-inference's `/predict`, `/info` and
//! `/tokenize` through the router, and the real `huggingface_hub` client against a running
//! `feelings-serve`.

use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use feelings_core::{Bundle, ReviewEncoder};
use serde_json::{json, Value};

use crate::gateway::{gateway, get, post_json, send, Answer};
use crate::{alone, tiny_bundle};

fn post(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Checks a TEI error: its status, `error_type`, and a message containing `says`.
fn assert_tei_error(answer: &Answer, status: StatusCode, error_type: &str, says: &str) {
    let body = answer.json();
    assert_eq!(answer.status, status, "{body}");
    assert_eq!(body["error_type"], error_type, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{message:?} does not say {says:?}");
}

/// The positive class's probability in a TEI answer for one review.
fn positive(scores: &Value) -> f64 {
    let scores = scores.as_array().unwrap();
    assert_eq!(scores.len(), 2);
    assert!(
        scores[0]["score"].as_f64() >= scores[1]["score"].as_f64(),
        "highest first"
    );
    let total: f64 = scores.iter().map(|s| s["score"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-5, "{scores:?}");
    scores.iter().find(|s| s["label"] == "positive").unwrap()["score"]
        .as_f64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn teis_predict_answers_as_classify_does_in_teis_shape() {
    let state = gateway();
    let text = "a fine film, wonderful acting";
    let ours = send(&state, post_json(json!({ "text": text }).to_string()))
        .await
        .json();
    let theirs = send(&state, post("/predict", json!({ "inputs": text }))).await;
    assert_eq!(theirs.status, StatusCode::OK);
    let p = positive(&theirs.json());
    assert!((p - ours["score"].as_f64().unwrap()).abs() < 1e-6);

    // A batch, one answer per review, in order; [text] is one review.
    let batch = send(
        &state,
        post("/predict", json!({ "inputs": [[text], ["dreadful"]] })),
    )
    .await;
    let batch = batch.json();
    assert_eq!(batch.as_array().unwrap().len(), 2);
    assert!((positive(&batch[0]) - p).abs() < 1e-6);
    let one = send(&state, post("/predict", json!({ "inputs": [text] })))
        .await
        .json();
    assert!((positive(&one) - p).abs() < 1e-6);

    // raw_scores: logits centred on zero whose softmax is the answer.
    let raw = send(
        &state,
        post("/predict", json!({ "inputs": text, "raw_scores": true })),
    )
    .await;
    let raw = raw.json();
    let logit = |label: &str| {
        raw.as_array()
            .unwrap()
            .iter()
            .find(|s| s["label"] == label)
            .unwrap()["score"]
            .as_f64()
            .unwrap()
    };
    let (pos, neg) = (logit("positive"), logit("negative"));
    assert!((pos + neg).abs() < 1e-5);
    assert!((1.0 / (1.0 + (neg - pos).exp()) - p).abs() < 1e-4, "{raw}");

    // The same routes for a named deployment.
    let named = send(
        &state,
        post(
            "/v1/deployments/e2e-tiny-bundle/predict",
            json!({ "inputs": text }),
        ),
    )
    .await;
    assert!((positive(&named.json()) - p).abs() < 1e-6);
}

#[tokio::test(flavor = "multi_thread")]
async fn teis_predict_refuses_what_it_cannot_answer_in_teis_error_shape() {
    let state = gateway();
    let pair = send(&state, post("/predict", json!({ "inputs": ["a", "b"] }))).await;
    assert_tei_error(
        &pair,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Validation",
        "pair",
    );
    let unknown = send(
        &state,
        post("/predict", json!({ "inputs": "a", "top_k": 1 })),
    )
    .await;
    assert_tei_error(
        &unknown,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Validation",
        "top_k",
    );
    let many = json!({ "inputs": vec![vec!["a"]; 9] });
    let too_many = send(&state, post("/predict", many)).await;
    assert_tei_error(
        &too_many,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Validation",
        "at most 8",
    );

    // Longer than the model reads: refused unless `truncate`, as TEI does.
    let long = "the film was long and the plot went on and on ".repeat(20);
    let refused = send(&state, post("/predict", json!({ "inputs": long }))).await;
    assert_tei_error(
        &refused,
        StatusCode::PAYLOAD_TOO_LARGE,
        "Validation",
        "must have less than 25 tokens",
    );
    let cut = send(
        &state,
        post("/predict", json!({ "inputs": long, "truncate": true })),
    )
    .await;
    assert_eq!(cut.status, StatusCode::OK);
    let right = json!({ "inputs": long, "truncate": true, "truncation_direction": "Right" });
    assert_eq!(
        send(&state, post("/predict", right)).await.status,
        StatusCode::OK
    );
    let left = json!({ "inputs": long, "truncate": true, "truncation_direction": "Left" });
    let left = send(&state, post("/predict", left)).await;
    assert_tei_error(
        &left,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Validation",
        "keeps the beginning",
    );

    let nobody = send(
        &state,
        post("/v1/deployments/nope/predict", json!({ "inputs": "a" })),
    )
    .await;
    assert_tei_error(&nobody, StatusCode::NOT_FOUND, "Validation", "nope");
    let not_json = Request::post("/predict")
        .body(Body::from("inputs"))
        .unwrap();
    let not_json = send(&state, not_json).await;
    assert_tei_error(
        &not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Validation",
        "JSON",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn teis_info_and_tokenize_describe_the_model_as_it_reads_reviews() {
    let state = gateway();
    let bundle = Bundle::read_dir(tiny_bundle()).unwrap();
    let info = send(&state, get("/info")).await.json();
    assert_eq!(info["model_id"], bundle.manifest.name.as_str());
    assert_eq!(info["max_input_length"], 24);
    assert_eq!(info["max_client_batch_size"], 8);
    assert_eq!(
        info["model_type"]["classifier"]["id2label"],
        json!({"0": "negative", "1": "positive"})
    );
    let text = "A fine<br />film";
    let tokens = send(&state, post("/tokenize", json!({ "inputs": text })))
        .await
        .json();
    let encoder =
        ReviewEncoder::from_bytes(&bundle.tokenizer, 24, bundle.manifest.truncation).unwrap();
    let ids: Vec<u64> = tokens[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = encoder
        .encode(text)
        .unwrap()
        .ids
        .into_iter()
        .map(u64::from)
        .collect();
    assert_eq!(ids, expected, "the ids the model reads");
    assert_eq!(tokens[0][0]["special"], true);
    assert_eq!(tokens[0][0]["start"], Value::Null);
    assert_eq!(
        (&tokens[0][1]["start"], &tokens[0][1]["special"]),
        (&json!(0), &json!(false))
    );
    let plain = send(
        &state,
        post(
            "/tokenize",
            json!({ "inputs": [text, "b"], "add_special_tokens": false }),
        ),
    )
    .await
    .json();
    assert_eq!(plain.as_array().unwrap().len(), 2);
    assert!(plain[0]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["special"] == false));
    assert_eq!(plain[0].as_array().unwrap().len(), ids.len() - 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_inference_apis_task_route_answers_a_list_per_review() {
    let state = gateway();
    let text = "a fine film, wonderful acting";
    let ours = send(&state, post_json(json!({ "text": text }).to_string()))
        .await
        .json();
    let answer = send(
        &state,
        post("/", json!({ "inputs": text, "parameters": {} })),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = answer.json();
    assert!((positive(&answer[0]) - ours["score"].as_f64().unwrap()).abs() < 1e-6);
    let top = send(
        &state,
        post(
            "/",
            json!({ "inputs": [text, "b"], "parameters": {"top_k": 1} }),
        ),
    )
    .await;
    let top = top.json();
    assert_eq!(
        (
            top.as_array().unwrap().len(),
            top[0].as_array().unwrap().len()
        ),
        (2, 1)
    );
    let sigmoid = json!({ "inputs": text, "parameters": {"function_to_apply": "sigmoid"} });
    let refused = send(&state, post("/", sigmoid)).await;
    assert_tei_error(
        &refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "Validation",
        "softmax",
    );
    let named = send(
        &state,
        post("/v1/deployments/e2e-tiny-bundle", json!({ "inputs": text })),
    )
    .await;
    assert!((positive(&named.json()[0]) - ours["score"].as_f64().unwrap()).abs() < 1e-6);
}

/// huggingface_hub's `InferenceClient(base_url=...).text_classification`, from PyPI (in the
/// peer venv, which transformers brings it into), against `feelings-serve` on loopback.
#[test]
fn huggingface_hubs_inference_client_classifies_with_feelings_serve() {
    let python = crate::peers_python();
    let installed = Command::new(&python)
        .args(["-c", "import huggingface_hub"])
        .output()
        .is_ok_and(|probe| probe.status.success());
    if !installed {
        crate::missing_tool(
            &format!(
                "the huggingface_hub client test did not run: {} cannot import huggingface_hub",
                python.display()
            ),
            "PEERS_DIR=~/.cache/feelings-tools/peers bash ../shared/bench/peers/setup.sh",
        );
        return;
    }
    let _alone = alone();
    let server = crate::serve::Server::start(&[]);
    let review = "A wonderful, moving film with superb acting. I loved every minute of it.";
    let script = "import json, sys\n\
        from huggingface_hub import InferenceClient\n\
        client = InferenceClient(base_url=sys.argv[1])\n\
        out = client.text_classification(sys.argv[2])\n\
        print(json.dumps([{'label': o.label, 'score': o.score} for o in out]))";
    let run = |base: &str| -> Value {
        let out = Command::new(&python)
            .args(["-c", script, base, review])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let ours = ureq::post(&format!("{}/v1/classify", server.base))
        .header("content-type", "application/json")
        .send(&json!({ "text": review }).to_string())
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let ours: Value = serde_json::from_str(&ours).unwrap();
    let theirs = run(&server.base);
    eprintln!("InferenceClient.text_classification: {theirs}; /v1/classify: {ours}");
    let p = positive(&theirs);
    assert!((p - ours["score"].as_f64().unwrap()).abs() < 1e-6);
}
