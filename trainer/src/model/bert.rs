//! A BERT encoder that can be fine-tuned with candle.
//!
//! The architecture is BERT's (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional
//! Transformers for Language Understanding"), laid out as Hugging Face's `BertModel` so its
//! checkpoints load unchanged: word + position + token-type embeddings, layer norm, then
//! `num_hidden_layers` blocks of multi-head self-attention and a GELU feed-forward network, each
//! followed by drop-out, a residual connection and layer norm.
//!
//! candle-transformers has a `BertModel` for inference, but it cannot be trained: its fused
//! layer norm has no backward pass (only the classifier would learn) and its drop-out does
//! nothing. This module builds the layer norm from differentiable operations and applies real,
//! seeded drop-out. In evaluation it computes what candle-transformers' model computes (a test
//! holds the two within 1e-5 on the real MiniLM).

use candle_core::{Module, Result as CandleResult, Tensor};
use candle_nn::Embedding;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::dropout::{Dropout, TrainRng};
use crate::model::weights::VarLoader;

/// The activation of the feed-forward layers (`hidden_act` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// The exact GELU, with the error function (BERT's `gelu`).
    Gelu,
    /// GELU's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    /// ReLU.
    Relu,
}

/// The fields of a Hugging Face BERT `config.json` this encoder uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Size of the word-piece vocabulary.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Number of attention heads per block.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Activation of the feed-forward layer.
    #[serde(default = "default_activation")]
    pub hidden_act: Activation,
    /// Drop-out on embeddings and block outputs.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Drop-out on attention probabilities.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Drop-out before the classification head; `hidden_dropout_prob` if absent.
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    /// Longest sequence the position embeddings cover.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// Epsilon of every layer norm.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Standard deviation of freshly initialised weights (the classification head).
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// The model classes the weights are for (`BertModel` for a base model,
    /// `BertForSequenceClassification` for a checkpoint with the pooler in its head).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
}

fn default_activation() -> Activation {
    Activation::Gelu
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_initializer_range() -> f64 {
    0.02
}

impl BertConfig {
    /// Whether `architectures` names `class`.
    pub fn names_architecture(&self, class: &str) -> bool {
        self.architectures.iter().any(|a| a == class)
    }

    /// Checks the numbers fit together.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.vocab_size == 0 || self.num_hidden_layers == 0 || self.max_position_embeddings == 0
        {
            return Err(
                "vocab_size, num_hidden_layers and max_position_embeddings must be positive".into(),
            );
        }
        Ok(())
    }
}

/// Layer normalisation with a learned weight and bias.
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(vb: &VarLoader, size: usize, eps: f64) -> Result<Self> {
        let vb = vb.pp("LayerNorm");
        Ok(Self {
            weight: vb.load("weight", &[size])?,
            bias: vb.load("bias", &[size])?,
            eps,
        })
    }

    fn forward(&self, xs: &Tensor) -> CandleResult<Tensor> {
        crate::model::fused::layer_norm(xs, &self.weight, &self.bias, self.eps)
    }
}

/// A dense layer, `x Wᵀ + b`, with the bias added by a fused kernel.
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn forward(&self, xs: &Tensor) -> CandleResult<Tensor> {
        // As candle-nn's `Linear`: one matrix product over all rows, not one per batch item.
        let product = match *xs.dims() {
            [batch, seq, input] if xs.is_contiguous() => xs
                .reshape((batch * seq, input))?
                .matmul(&self.weight.t()?)?
                .reshape((batch, seq, ()))?,
            _ => xs.broadcast_matmul(&self.weight.t()?)?,
        };
        crate::model::fused::bias_add(&product, &self.bias)
    }
}

fn linear(vb: &VarLoader, name: &str, input: usize, output: usize) -> Result<Dense> {
    let vb = vb.pp(name);
    Ok(Dense {
        weight: vb.load("weight", &[output, input])?,
        bias: vb.load("bias", &[output])?,
    })
}

struct Embeddings {
    word: Embedding,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
    dropout: Dropout,
}

impl Embeddings {
    fn load(vb: &VarLoader, c: &BertConfig) -> Result<Self> {
        let h = c.hidden_size;
        let word = vb.load("word_embeddings.weight", &[c.vocab_size, h])?;
        Ok(Self {
            word: Embedding::new(word, h),
            position: vb.load(
                "position_embeddings.weight",
                &[c.max_position_embeddings, h],
            )?,
            token_type: vb.load("token_type_embeddings.weight", &[c.type_vocab_size, h])?,
            norm: LayerNorm::load(vb, h, c.layer_norm_eps)?,
            dropout: Dropout::new(c.hidden_dropout_prob),
        })
    }

    /// Single-segment input: every token has token type 0.
    fn forward(&self, input_ids: &Tensor, rng: TrainRng) -> CandleResult<Tensor> {
        let seq_len = input_ids.dim(1)?;
        let xs = self
            .word
            .forward(input_ids)?
            .broadcast_add(&self.position.narrow(0, 0, seq_len)?)?
            .broadcast_add(&self.token_type.narrow(0, 0, 1)?)?;
        self.dropout.forward(&self.norm.forward(&xs)?, rng)
    }
}

struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: LayerNorm,
    activation: Activation,
    heads: usize,
    attention_dropout: Dropout,
    hidden_dropout: Dropout,
}

impl Layer {
    fn load(vb: &VarLoader, c: &BertConfig) -> Result<Self> {
        let h = c.hidden_size;
        let attention = vb.pp("attention");
        let self_attention = attention.pp("self");
        Ok(Self {
            query: linear(&self_attention, "query", h, h)?,
            key: linear(&self_attention, "key", h, h)?,
            value: linear(&self_attention, "value", h, h)?,
            attention_out: linear(&attention.pp("output"), "dense", h, h)?,
            attention_norm: LayerNorm::load(&attention.pp("output"), h, c.layer_norm_eps)?,
            intermediate: linear(&vb.pp("intermediate"), "dense", h, c.intermediate_size)?,
            output: linear(&vb.pp("output"), "dense", c.intermediate_size, h)?,
            output_norm: LayerNorm::load(&vb.pp("output"), h, c.layer_norm_eps)?,
            activation: c.hidden_act,
            heads: c.num_attention_heads,
            attention_dropout: Dropout::new(c.attention_probs_dropout_prob),
            hidden_dropout: Dropout::new(c.hidden_dropout_prob),
        })
    }

    /// `mask_bias` is 0 for real tokens and -10000 for padding, shaped `[batch, 1, 1, seq]`.
    fn forward(&self, xs: &Tensor, mask_bias: &Tensor, mut rng: TrainRng) -> CandleResult<Tensor> {
        let (batch, seq, hidden) = xs.dims3()?;
        let head_dim = hidden / self.heads;
        let heads = |t: Tensor| -> CandleResult<Tensor> {
            t.reshape((batch, seq, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let scale = 1.0 / (head_dim as f64).sqrt();
        let q = heads((self.query.forward(xs)? * scale)?)?;
        let k = heads(self.key.forward(xs)?)?;
        let v = heads(self.value.forward(xs)?)?;
        let probs = crate::model::fused::masked_softmax(&q.matmul(&k.t()?)?, mask_bias)?;
        let probs = self.attention_dropout.forward(&probs, rng.as_deref_mut())?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, seq, hidden))?;
        let attended = self
            .hidden_dropout
            .forward(&self.attention_out.forward(&context)?, rng.as_deref_mut())?;
        let xs = self.attention_norm.forward(&(attended + xs)?)?;
        let inner = self.intermediate.forward(&xs)?;
        let inner = match self.activation {
            Activation::Gelu => crate::model::fused::gelu_erf(&inner)?,
            Activation::GeluNew => inner.gelu()?,
            Activation::Relu => inner.relu()?,
        };
        let out = self
            .hidden_dropout
            .forward(&self.output.forward(&inner)?, rng)?;
        self.output_norm.forward(&(out + xs)?)
    }
}

/// The BERT encoder: token ids in, one hidden state per token out.
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl Bert {
    /// Loads the encoder's weights (`embeddings.*`, `encoder.layer.N.*`) as trainable variables.
    pub fn load(vb: &VarLoader, config: &BertConfig) -> Result<Self> {
        config.validate().map_err(Error::Setting)?;
        let embeddings = Embeddings::load(&vb.pp("embeddings"), config)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(&vb.pp("encoder.layer").pp(i), config))
            .collect::<Result<_>>()?;
        Ok(Self { embeddings, layers })
    }

    /// Keeps the word embeddings out of training: the forward pass reads them detached from
    /// their variable, so no gradient reaches it (the variable, and so every checkpoint, keeps
    /// the loaded values).
    pub fn freeze_word_embeddings(&mut self) {
        let table = self.embeddings.word.embeddings().detach();
        let hidden = self.embeddings.word.hidden_size();
        self.embeddings.word = Embedding::new(table, hidden);
    }

    /// Encodes `input_ids` (`[batch, seq]`, u32) where `attention_mask` (`[batch, seq]`, f32)
    /// is 1 for tokens and 0 for padding; returns `[batch, seq, hidden]`. Drop-out is applied
    /// when `rng` is given (training), not otherwise (evaluation).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        mut rng: TrainRng,
    ) -> CandleResult<Tensor> {
        let (batch, seq) = attention_mask.dims2()?;
        let mask_bias = ((attention_mask.ones_like()? - attention_mask)? * -10_000.0)?
            .reshape((batch, 1, 1, seq))?;
        let mut xs = self.embeddings.forward(input_ids, rng.as_deref_mut())?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &mask_bias, rng.as_deref_mut())?;
        }
        Ok(xs)
    }
}
