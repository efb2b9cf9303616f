//! # fidelis-models
//!
//! Loads transformer language models (decoder-only and encoder-decoder) into
//! [Burn](https://burn.dev) and runs them with hook points, so that interpretability code can
//! read, replace and differentiate every activation the literature names.
//!
//! - **Sources**: Hugging Face folders (`config.json`, `model.safetensors` or sharded, and
//!   `tokenizer.json`) and GGUF files (Llama family and GPT-NeoX; metadata, tokenizer from the
//!   GGUF vocabulary, byte-level BPE or SentencePiece, tensors in
//!   F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q4_K/Q6_K dequantized to f32).
//! - **Architectures**: GPT-2 ([`gpt2`]), the Llama family ([`llama`]: Llama 3.x, Mistral,
//!   SmolLM, Qwen 2.5 and 3, Gemma 2) and GPT-NeoX / Pythia ([`gpt_neox`]), one file each; all
//!   feed one hooked forward ([`Transformer`]).
//! - **Hooks** ([`Hooks`]): TransformerLens names (`blocks.{l}.attn.hook_result`, ...). Per-head
//!   results and split per-head q/k/v inputs are computed only when a hook asks for them.
//!   Gradient probes give ∂loss/∂activation at any point. [`point::all`] lists every point a
//!   config offers, in forward order; [`Hooks::record_all`] records them all.
//! - **Batches and generation**: right-padded [`Batch`]es with per-example lengths; greedy and
//!   sampled [`GenerateConfig`] generation with a KV cache.
//! - **Encoder-decoders** ([`Seq2SeqModel::load`], [`Seq2Seq`]): MarianMT, mBART / mBART-50 and
//!   M2M100 / NLLB ([`bart`]) and T5 / mT5 / Flan-T5 ([`t5`]) through one hooked forward
//!   ([`seq2seq`]): `encode`, `decode`, forced decoding, and generation with a decoder cache and
//!   the target language forced. Hook points carry the names above under `encoder.` /
//!   `decoder.`, plus the cross-attention's ([`seq2seq::points`]).
//!
//! The crate never names a backend: the caller passes a Burn `Device`. It knows nothing of
//! graphs or attribution, and it reaches the network only in [`fetch::fetch_smollm2`], which
//! runs when a user asks for it.
//!
//! ```no_run
//! use burn::prelude::*;
//! use fidelis_models::{Hooks, Model, point};
//!
//! # fn main() -> Result<(), fidelis_models::ModelError> {
//! let device = Device::default();
//! let model = Model::load("models/organism".as_ref(), &device)?;
//! let ids = model.tokenizer.encode_prompt("When Mary and John went to the store", true)?;
//! let batch = fidelis_models::Batch::from_sequences(&[ids], 0, &device)?;
//! let mut hooks = Hooks::new();
//! hooks.record(point::result(0)).probe(point::EMBED);
//! let logits = model.transformer.forward_batch(&batch, &mut hooks)?;
//! let grads = logits.sum().backward();
//! let d_embed = hooks.probe_grad(point::EMBED, &grads);
//! # Ok(()) }
//! ```

pub mod bart;
pub mod config;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod gguf_source;
pub mod gpt2;
pub mod gpt_neox;
pub mod hooks;
pub mod llama;
mod loader;
pub mod model;
pub mod precision;
pub mod progress;
pub mod seq2seq;
pub mod t5;
pub mod tokenizer;
pub mod transformer;
pub mod weights;

pub use config::{Architecture, RopeScaling, TransformerConfig};
pub use error::{ModelError, Result};
pub use generate::GenerateConfig;
pub use hooks::{Activation, Hooks, point};
pub use model::Model;
pub use precision::Dtype;
pub use progress::{Progress, Silent};
pub use seq2seq::{EncoderOutput, Seq2Seq, Seq2SeqCache, Seq2SeqConfig, Seq2SeqModel};
pub use tokenizer::{Encoding, Tokenizer};
pub use transformer::{Batch, KvCache, Transformer};

/// The README's examples, compiled and run as doctests so that they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
