//! Integration tests of the trainer: one test binary, one module per concern.

mod cli;
mod data;
mod export;
mod fixtures;
mod minilm;
mod training;
