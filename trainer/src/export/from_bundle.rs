//! A bundle's weights read back as a model folder, so a bundle can be exported again in
//! another precision (`feelings export BUNDLE --quantize int8-dynamic`) when its run folder is
//! gone, as for the shipped model.
//!
//! The graph is the one [`super::onnx`] writes, so its initializers carry the variables'
//! names: f32 as they are (linear weights transposed to `[in, out]`), or int8 (`.int8`, or
//! `.uint8` offset by 128 in the integer products) with a `.scale` per channel, which is
//! multiplied back. A weight rounded to int8 and read back
//! rounds to the same int8 again (each channel's largest value is exactly ±127 steps), so
//! re-exporting an int8 bundle at either int8 precision keeps its int8 values (scales within
//! a rounding). 4-bit word embeddings (`.int4` with f16 `.block_scale`s) come back the same way
//! and round to the same 4-bit values again. The
//! configuration is read from the graph's shapes and attributes. The bundle keeps only token
//! type 0's embedding, the only one a review uses: type 1 comes back as zeros.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use feelings_core::manifest::{MODEL_FILE, TOKENIZER_FILE};
use feelings_core::Bundle;
use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, TensorProto};

use super::onnx::{dequantize_int4, INT4_BLOCK, WEIGHT_ZERO_POINT};
use crate::error::{Error, Result};
use crate::model::bert::{Activation, BertConfig};
use crate::model::{checkpoint_config, hf_name, SEQUENCE_CLASSIFICATION};

const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";
const POSITION_EMBEDDINGS: &str = "embeddings.position_embeddings.weight";
const TOKEN_TYPE_0: &str = "embeddings.token_type_0";

/// Writes `config.json`, `model.safetensors` and `tokenizer.json` of the model in `bundle`'s
/// ONNX graph into `dir`, a folder [`crate::model::ModelFiles::locate`] reads.
pub fn write_model_folder(bundle: &Bundle, dir: &Path) -> Result<()> {
    let bad = |message: String| Error::model(MODEL_FILE, message);
    let proto = ModelProto::decode(&bundle.model[..])
        .map_err(|e| bad(format!("not an ONNX model: {e}")))?;
    let graph = proto
        .graph
        .ok_or_else(|| bad("the ONNX file has no graph".into()))?;
    let initializers: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let config = read_config(&graph, &initializers).map_err(bad)?;
    let tensors = read_variables(&initializers, config.hidden_size).map_err(bad)?;
    let with_pooler = config.names_architecture(SEQUENCE_CLASSIFICATION);
    let config_json = serde_json::to_vec_pretty(&config).expect("a config serialises");
    let config_json = checkpoint_config(&config_json, &bundle.manifest.labels, with_pooler)
        .expect("a serialised config is a JSON object");
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(name, tensor)| (hf_name(&name), tensor))
        .collect();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| Error::io(path, e))
    };
    write("config.json", &config_json)?;
    write(TOKENIZER_FILE, &bundle.tokenizer)?;
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights)
        .map_err(|e| Error::model(&weights, e.to_string()))
}

/// The encoder's configuration from the graph: sizes from the initializers' shapes, the
/// layer norm epsilon and the activation from the nodes.
fn read_config(
    graph: &tract_onnx::pb::GraphProto,
    initializers: &HashMap<&str, &TensorProto>,
) -> std::result::Result<BertConfig, String> {
    let dims = |name: &str| -> std::result::Result<Vec<usize>, String> {
        if let Some(t) = initializers.get(format!("{name}.int4").as_str()) {
            let [rows, bytes] = t.dims[..] else {
                return Err(format!("'{name}.int4' is not a matrix"));
            };
            // Two values a byte.
            return Ok(vec![rows as usize, 2 * bytes as usize]);
        }
        let t = initializers
            .get(name)
            .or_else(|| initializers.get(format!("{name}.int8").as_str()))
            .or_else(|| initializers.get(format!("{name}.uint8").as_str()))
            .ok_or_else(|| {
                format!("no initializer '{name}': not a graph `feelings export` wrote")
            })?;
        Ok(t.dims.iter().map(|&d| d as usize).collect())
    };
    let words = dims(WORD_EMBEDDINGS)?;
    let positions = dims(POSITION_EMBEDDINGS)?;
    let intermediate = dims("encoder.layer.0.intermediate.dense.bias")?;
    let layers = (0..)
        .take_while(|l| {
            initializers.contains_key(format!("encoder.layer.{l}.split_heads").as_str())
        })
        .count();
    let split = initializers
        .get("encoder.layer.0.split_heads")
        .ok_or("no initializer 'encoder.layer.0.split_heads'")?;
    let heads = split
        .raw_data
        .chunks_exact(8)
        .nth(2)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or("'encoder.layer.0.split_heads' is not [0, 0, heads, head size]")?;
    let has = |op: &str| graph.node.iter().any(|n| n.op_type == op);
    // The pooler's tanh is one; GELU's tanh approximation has one per layer.
    let pooler = initializers.contains_key("pooler.dense.bias");
    let tanhs = graph.node.iter().filter(|n| n.op_type == "Tanh").count();
    let hidden_act = if has("Erf") {
        Activation::Gelu
    } else if tanhs > usize::from(pooler) {
        Activation::GeluNew
    } else {
        Activation::Relu
    };
    let layer_norm_eps = graph
        .node
        .iter()
        .find(|n| n.op_type == "LayerNormalization")
        .and_then(|n| n.attribute.iter().find(|a| a.name == "epsilon"))
        .map(|a| f64::from(a.f))
        .ok_or("no LayerNormalization with an epsilon")?;
    Ok(BertConfig {
        vocab_size: words[0],
        hidden_size: words[1],
        num_hidden_layers: layers,
        num_attention_heads: heads,
        intermediate_size: intermediate[0],
        hidden_act,
        hidden_dropout_prob: 0.1,
        attention_probs_dropout_prob: 0.1,
        classifier_dropout: None,
        max_position_embeddings: positions[0],
        type_vocab_size: 2,
        layer_norm_eps,
        initializer_range: 0.02,
        architectures: match pooler {
            true => vec![SEQUENCE_CLASSIFICATION.into()],
            false => vec!["BertModel".into()],
        },
    })
}

/// Every trained variable by its candle name, in candle's layout.
fn read_variables(
    initializers: &HashMap<&str, &TensorProto>,
    hidden: usize,
) -> std::result::Result<HashMap<String, Tensor>, String> {
    let mut tensors = HashMap::new();
    for (&name, t) in initializers {
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let quantized = name
            .strip_suffix(".int8")
            .map(|base| (base, Integers::Signed))
            .or_else(|| name.strip_suffix(".uint8").map(|b| (b, Integers::Offset)));
        let (variable, values) = if let Some(base) = name.strip_suffix(".int4") {
            (base, int4_values(name, t, initializers, hidden)?)
        } else if let Some((base, integers)) = quantized {
            let scale_name = format!("{base}.scale");
            let scales = initializers
                .get(scale_name.as_str())
                .ok_or_else(|| format!("'{name}' has no '{scale_name}'"))?;
            (base, dequantised(name, t, integers, &f32s(scales)?, &dims)?)
        } else if name == TOKEN_TYPE_0 {
            let mut values = f32s(t)?;
            values.resize(2 * hidden, 0.0);
            let tensor =
                Tensor::from_vec(values, (2, hidden), &Device::Cpu).map_err(|e| e.to_string())?;
            tensors.insert("embeddings.token_type_embeddings.weight".into(), tensor);
            continue;
        } else if is_variable(name, t) {
            (name, f32s(t)?)
        } else {
            continue;
        };
        let dims = match (name.ends_with(".int4"), dims.first()) {
            (true, Some(&rows)) => vec![rows, hidden],
            _ => dims,
        };
        let tensor =
            Tensor::from_vec(values, dims.as_slice(), &Device::Cpu).map_err(|e| e.to_string())?;
        // Linear weights are stored as [in, out]; candle keeps [out, in].
        let tensor = if is_linear_weight(variable) {
            tensor
                .t()
                .and_then(|t| t.contiguous())
                .map_err(|e| e.to_string())?
        } else {
            tensor
        };
        tensors.insert(variable.to_string(), tensor);
    }
    Ok(tensors)
}

/// An f32 initializer that is one of the model's variables, not a constant of the graph.
fn is_variable(name: &str, t: &TensorProto) -> bool {
    t.data_type == DataType::Float as i32
        && !name.starts_with("const.")
        && !name.ends_with(".scale")
        && (name.ends_with(".weight") || name.ends_with(".bias"))
}

fn is_linear_weight(name: &str) -> bool {
    name.ends_with(".weight")
        && !name.ends_with("LayerNorm.weight")
        && name != WORD_EMBEDDINGS
        && name != POSITION_EMBEDDINGS
}

/// How a quantised initializer holds its int8 values.
#[derive(Clone, Copy)]
enum Integers {
    /// `.int8`: as they are.
    Signed,
    /// `.uint8`: plus [`WEIGHT_ZERO_POINT`] (int8-dynamic's integer products).
    Offset,
}

/// The int8 values of initializer `name` times their channel's scale: per row for the word
/// embeddings, per column (the output channel of a transposed linear weight) otherwise.
fn dequantised(
    name: &str,
    t: &TensorProto,
    integers: Integers,
    scales: &[f32],
    dims: &[usize],
) -> std::result::Result<Vec<f32>, String> {
    let [rows, columns] = dims else {
        return Err(format!("'{name}' is not a matrix"));
    };
    let per_row = name.starts_with(WORD_EMBEDDINGS);
    if t.raw_data.len() != rows * columns || scales.len() != if per_row { *rows } else { *columns }
    {
        return Err(format!(
            "'{name}' and its scales do not fit its shape {dims:?}"
        ));
    }
    Ok(t.raw_data
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let channel = if per_row { i / columns } else { i % columns };
            let q = match integers {
                Integers::Signed => f32::from(q as i8),
                Integers::Offset => f32::from(q) - f32::from(WEIGHT_ZERO_POINT),
            };
            q * scales[channel]
        })
        .collect())
}

/// The f32 values of the 4-bit table `name` (`[rows, hidden / 2]` packed nibbles) with its
/// f16 `.block_scale`s (see [`super::onnx::quantize_int4`]).
fn int4_values(
    name: &str,
    t: &TensorProto,
    initializers: &HashMap<&str, &TensorProto>,
    hidden: usize,
) -> std::result::Result<Vec<f32>, String> {
    let base = name.trim_end_matches(".int4");
    let scale_name = format!("{base}.block_scale");
    let scales = initializers
        .get(scale_name.as_str())
        .ok_or_else(|| format!("'{name}' has no '{scale_name}'"))?;
    let scales: Vec<half::f16> = scales
        .raw_data
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
        .collect();
    let rows = t.dims.first().copied().unwrap_or_default() as usize;
    if t.raw_data.len() != rows * hidden / 2 || scales.len() * INT4_BLOCK != rows * hidden {
        return Err(format!(
            "'{name}' and its block scales do not fit {rows} rows of {hidden}"
        ));
    }
    Ok(dequantize_int4(&t.raw_data, &scales, hidden))
}

fn f32s(t: &TensorProto) -> std::result::Result<Vec<f32>, String> {
    if !t.raw_data.len().is_multiple_of(4) {
        return Err(format!("'{}' is not f32 raw data", t.name));
    }
    Ok(t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect())
}
