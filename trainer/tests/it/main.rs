//! Integration tests of the trainer: one test binary, one module per concern.

mod cli;
mod data;
mod deploy;
mod evaluation;
mod export;
mod fixtures;
mod hf_layout;
mod minilm;
mod shipped_model;
mod training;
