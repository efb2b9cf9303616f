//! Loading a model and its tokenizer from a Hugging Face folder or a GGUF file.

use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::Deserialize;

use crate::config::{Architecture, TransformerConfig};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::gguf_source::GgufSource;
use crate::llama::LlamaConfig;
use crate::loader::Loader;
use crate::progress::{Progress, Silent};
use crate::tokenizer::Tokenizer;
use crate::transformer::Transformer;
use crate::weights::{RandomWeights, SafetensorsSource, WeightSource, read_text};
use crate::{gpt_neox, gpt2, llama};

/// Model families Fidelis can load, by Hugging Face `model_type`.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &[
    "gemma2", "gpt2", "gpt_neox", "llama", "mistral", "qwen2", "qwen3",
];

/// Model families Fidelis can load from GGUF, by llama.cpp's `general.architecture`.
pub const SUPPORTED_GGUF_ARCHITECTURES: &[&str] =
    &["llama", "mistral", "qwen2", "qwen3", "gptneox"];

/// A loaded model: the hooked transformer and its tokenizer.
#[derive(Debug, Clone)]
pub struct Model {
    /// The network.
    pub transformer: Transformer,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Where it was loaded from.
    pub source: PathBuf,
}

/// The stage name model loading reports to its [`Progress`] (counts in weight elements).
pub const LOADING: &str = "loading";

/// Where loading reports.
pub type LoadProgress<'a> = &'a mut dyn Progress;

#[derive(Deserialize)]
struct ModelType {
    model_type: Option<String>,
}

impl Model {
    /// Loads a Hugging Face model folder or a `.gguf` file onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_with_progress(path, device, &mut Silent)
    }

    /// Like [`Model::load`], ticking `progress` (stage [`LOADING`], counts in weight elements)
    /// after every tensor; a `Break` stops loading with [`ModelError::Cancelled`].
    pub fn load_with_progress(
        path: &Path,
        device: &Device,
        progress: LoadProgress<'_>,
    ) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "model (a Hugging Face folder or a .gguf file)",
            });
        }
        if path.is_dir() {
            load_hf_folder(path, device, progress)
        } else {
            load_gguf(path, device, progress)
        }
    }

    /// The architecture-neutral config.
    pub fn config(&self) -> &TransformerConfig {
        self.transformer.config()
    }
}

fn build_with_progress(
    src: &dyn WeightSource,
    device: &Device,
    total: u64,
    progress: LoadProgress<'_>,
    build: impl FnOnce(&Loader<'_>) -> Result<Transformer>,
) -> Result<Transformer> {
    let done = Cell::new(0u64);
    let progress = RefCell::new(progress);
    // `total` is an estimate from the config (biases and position tables aside): the count
    // never runs past it, and the last tick is exact.
    let tick = |done: u64, total: u64| match progress.borrow_mut().tick(
        LOADING,
        done as usize,
        total.max(done) as usize,
    ) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(ModelError::Cancelled),
    };
    let on_tensor = |n: usize| {
        done.set(done.get() + n as u64);
        tick(done.get(), total)
    };
    let loader = Loader {
        src,
        device,
        on_tensor: &on_tensor,
    };
    let model = build(&loader)?;
    tick(done.get(), done.get())?;
    Ok(model)
}

/// The architecture-neutral config of a Hugging Face `config.json`, without loading weights
/// (what `fidelis inspect --config` reports). Errors name the file and what is wrong or
/// unsupported.
pub fn config_from_file(config_path: &Path) -> Result<TransformerConfig> {
    if !config_path.exists() {
        return Err(ModelError::MissingFile {
            path: config_path.to_path_buf(),
            what: "model config",
        });
    }
    let text = read_text(config_path)?;
    let bad = |e: serde_json::Error| ModelError::Config {
        path: config_path.to_path_buf(),
        message: e.to_string(),
    };
    let model_type = serde_json::from_str::<ModelType>(&text)
        .map_err(bad)?
        .model_type;
    let model_type = model_type.ok_or_else(|| ModelError::Config {
        path: config_path.to_path_buf(),
        message: "no `model_type` field".into(),
    })?;
    let cfg = match model_type.as_str() {
        "gpt2" => serde_json::from_str::<gpt2::Gpt2Config>(&text)
            .map_err(bad)?
            .to_transformer()?,
        "gpt_neox" => serde_json::from_str::<gpt_neox::GptNeoXConfig>(&text)
            .map_err(bad)?
            .to_transformer()?,
        "llama" | "mistral" | "qwen2" | "qwen3" | "gemma2" => {
            serde_json::from_str::<LlamaConfig>(&text)
                .map_err(bad)?
                .to_transformer()?
        }
        other => {
            return Err(ModelError::Unsupported(format!(
                "architecture `{other}` (supported: {})",
                SUPPORTED_MODEL_TYPES.join(", ")
            )));
        }
    };
    cfg.check_sizes()?;
    Ok(cfg)
}

/// The architecture-neutral config of the model at `path` without loading its weights: a Hugging
/// Face folder's `config.json`, or a GGUF file's metadata (what `fidelis inspect --plan` reads).
pub fn config_at(path: &Path) -> Result<TransformerConfig> {
    if path.is_dir() {
        return config_from_file(&path.join("config.json"));
    }
    if !path.exists() {
        return Err(ModelError::MissingFile {
            path: path.to_path_buf(),
            what: "model (a Hugging Face folder or a .gguf file)",
        });
    }
    Ok(checked_gguf_config(&GgufFile::open(path)?)?.1)
}

fn load_hf_folder(dir: &Path, device: &Device, progress: LoadProgress<'_>) -> Result<Model> {
    let cfg = config_from_file(&dir.join("config.json"))?;
    let tokenizer = Tokenizer::from_file(
        &dir.join("tokenizer.json"),
        cfg.bos_token_id,
        cfg.eos_token_id,
    )?;
    let src = SafetensorsSource::open_folder(dir)?;
    let total = estimate_elements(&cfg);
    let transformer =
        build_with_progress(&src, device, total, progress, |w| match cfg.architecture {
            Architecture::Gpt2 => gpt2::build(cfg, w),
            Architecture::GptNeoX => gpt_neox::build(cfg, w),
            Architecture::Llama | Architecture::Gemma2 => llama::build(cfg, w),
        })?;
    Ok(Model {
        transformer,
        tokenizer,
        source: dir.to_path_buf(),
    })
}

fn load_gguf(path: &Path, device: &Device, progress: LoadProgress<'_>) -> Result<Model> {
    let file = GgufFile::open(path)?;
    let (arch, cfg) = checked_gguf_config(&file)?;
    let special = file.special_tokens();
    let tokenizer = Tokenizer::new(file.tokenizer()?, special.bos, special.eos);
    let cfg = TransformerConfig {
        bos_token_id: special.bos,
        eos_token_id: special.eos,
        ..cfg
    };
    let total = estimate_elements(&cfg);
    let transformer = if cfg.architecture == Architecture::GptNeoX {
        let src = GgufSource::gpt_neox(&file, cfg.n_heads);
        build_with_progress(&src, device, total, progress, |w| gpt_neox::build(cfg, w))?
    } else {
        // llama.cpp permutes q/k rows only for models it converts with interleaved rotary.
        let permuted = !matches!(arch.as_str(), "qwen2" | "qwen3");
        let src = GgufSource::new(&file, cfg.n_heads, cfg.n_kv_heads, permuted);
        build_with_progress(&src, device, total, progress, |w| llama::build(cfg, w))?
    };
    Ok(Model {
        transformer,
        tokenizer,
        source: path.to_path_buf(),
    })
}

/// The architecture of a GGUF file, if Fidelis reads it, and the config its metadata describes,
/// with sizes checked.
fn checked_gguf_config(file: &GgufFile) -> Result<(String, TransformerConfig)> {
    let arch = file.architecture()?.to_string();
    let cfg = match arch.as_str() {
        "llama" | "qwen2" | "qwen3" | "mistral" => gguf_config(file, &arch)?,
        "gptneox" => gguf_gpt_neox_config(file)?,
        other => {
            return Err(ModelError::Unsupported(format!(
                "GGUF architecture `{other}` (supported: {})",
                SUPPORTED_GGUF_ARCHITECTURES.join(", ")
            )));
        }
    };
    cfg.check_sizes()?;
    Ok((arch, cfg))
}

impl Transformer {
    /// A model of the given shape with random weights (seeded), for benchmarks and tests that
    /// need a model's size rather than its skill.
    pub fn random(cfg: TransformerConfig, seed: u64, device: &Device) -> Result<Self> {
        let src = RandomWeights {
            seed,
            std: 0.02,
            biases: matches!(cfg.architecture, Architecture::Gpt2 | Architecture::GptNeoX),
            untied_head: !cfg.tied_embeddings,
        };
        let loader = Loader {
            src: &src,
            device,
            on_tensor: &|_| Ok(()),
        };
        match cfg.architecture {
            Architecture::Gpt2 => gpt2::build(cfg, &loader),
            Architecture::Llama | Architecture::Gemma2 => llama::build(cfg, &loader),
            Architecture::GptNeoX => gpt_neox::build(cfg, &loader),
        }
    }
}

/// The rope scaling of a GGUF file in Hugging Face's `rope_scaling` form: llama.cpp writes
/// `{arch}.rope.scaling.type` (`none`, `linear`, `yarn`) and, for Llama 3.1's scaling, a
/// `rope_freqs.weight` tensor of per-frequency factors, which Fidelis does not read yet: such a
/// file is an error rather than a model with the wrong positions.
fn gguf_rope_scaling(file: &GgufFile, arch: &str) -> Result<Option<serde_json::Value>> {
    if file.tensor_info("rope_freqs.weight").is_some() {
        return Err(ModelError::Unsupported(
            "GGUF rope scaling by a `rope_freqs` tensor (Llama 3.1 and later); load the model's \
             Hugging Face folder instead, which Fidelis reads with its `llama3` rope scaling"
                .into(),
        ));
    }
    let kind = match file.get_str(&format!("{arch}.rope.scaling.type")) {
        Ok(kind) => kind,
        Err(_) => return Ok(None),
    };
    Ok(match kind {
        "none" => None,
        "linear" => {
            let factor = file.get_f32(&format!("{arch}.rope.scaling.factor"))?;
            Some(serde_json::json!({"rope_type": "linear", "factor": f64::from(factor)}))
        }
        other => Some(serde_json::json!({ "rope_type": other })),
    })
}

/// The Llama config a GGUF file's metadata describes.
fn gguf_config(file: &GgufFile, arch: &str) -> Result<TransformerConfig> {
    let key = |k: &str| format!("{arch}.{k}");
    let as_usize = |k: &str| -> Result<usize> { Ok(file.get_u64(&key(k))? as usize) };
    let n_heads = as_usize("attention.head_count")?;
    let d_model = as_usize("embedding_length")?;
    let vocab = gguf_vocab_size(file, arch)?;
    let hf = LlamaConfig {
        model_type: arch.to_string(),
        vocab_size: vocab,
        hidden_size: d_model,
        intermediate_size: as_usize("feed_forward_length")?,
        num_hidden_layers: as_usize("block_count")?,
        num_attention_heads: n_heads,
        num_key_value_heads: Some(as_usize("attention.head_count_kv").unwrap_or(n_heads)),
        head_dim: as_usize("attention.key_length").ok(),
        max_position_embeddings: as_usize("context_length")?,
        rms_norm_eps: f64::from(file.get_f32(&key("attention.layer_norm_rms_epsilon"))?),
        rope_theta: file
            .get_f32(&key("rope.freq_base"))
            .map_or(10_000.0, f64::from),
        rope_scaling: gguf_rope_scaling(file, arch)?,
        rope_parameters: None,
        hidden_act: "silu".into(),
        hidden_activation: None,
        query_pre_attn_scalar: None,
        attn_logit_softcapping: None,
        final_logit_softcapping: None,
        use_bidirectional_attention: None,
        tie_word_embeddings: file.tensor_info("output.weight").is_none(),
        attention_bias: file.tensor_info("blk.0.attn_q.bias").is_some(),
        mlp_bias: false,
        sliding_window: None,
        use_sliding_window: None,
        max_window_layers: None,
        layer_types: None,
        bos_token_id: None,
        eos_token_id: None,
    };
    hf.to_transformer()
}

/// The vocabulary size of a GGUF file: `{arch}.vocab_size`, else the rows of `token_embd`.
fn gguf_vocab_size(file: &GgufFile, arch: &str) -> Result<usize> {
    match file.get_usize(&format!("{arch}.vocab_size")) {
        Ok(v) => Ok(v),
        Err(_) => file
            .tensor_info("token_embd.weight")
            .and_then(|t| t.shape.first().copied())
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into())),
    }
}

/// The fraction of a `d_head`-wide head that Hugging Face's `int(d_head * rotary_pct)` turns back
/// into exactly `rotary_dim` dimensions. `rotary_dim / d_head` itself can fall a hair short
/// (`2 / 49 * 49 < 2` in f64), so the fraction aims a quarter of a dimension above.
fn rotary_fraction(rotary_dim: usize, d_head: usize) -> f64 {
    ((rotary_dim as f64 + 0.25) / d_head as f64).min(1.0)
}

/// The GPT-NeoX config a `gptneox` GGUF file's metadata describes, with the keys llama.cpp's
/// converter writes (`GPTNeoXModel.set_gguf_parameters`) and its loader reads: the rotary width
/// in dimensions (`rope.dimension_count`, Hugging Face's `rotary_pct` times the head width),
/// `use_parallel_residual` and the LayerNorm epsilon are required, the rope base defaults to
/// 10000 as in llama.cpp. The file does not name the MLP activation; it is Pythia's
/// (`hidden_act = "gelu"`, the exact GELU), which the Hugging Face folder would give.
fn gguf_gpt_neox_config(file: &GgufFile) -> Result<TransformerConfig> {
    const ARCH: &str = "gptneox";
    let key = |k: &str| format!("{ARCH}.{k}");
    let as_usize = |k: &str| file.get_usize(&key(k));
    let d_model = as_usize("embedding_length")?;
    let n_heads = as_usize("attention.head_count")?;
    let rotary_dim = as_usize("rope.dimension_count")?;
    let d_head = d_model.checked_div(n_heads).unwrap_or(0);
    if rotary_dim == 0 || rotary_dim > d_head || !rotary_dim.is_multiple_of(2) {
        return Err(ModelError::Unsupported(format!(
            "{} = {rotary_dim} for {d_head}-wide heads: the rotary width must be a positive even \
             number of dimensions no wider than a head",
            key("rope.dimension_count")
        )));
    }
    let hf = gpt_neox::GptNeoXConfig {
        vocab_size: gguf_vocab_size(file, ARCH)?,
        hidden_size: d_model,
        num_hidden_layers: as_usize("block_count")?,
        num_attention_heads: n_heads,
        intermediate_size: as_usize("feed_forward_length")?,
        max_position_embeddings: as_usize("context_length")?,
        hidden_act: "gelu".into(),
        rotary_pct: Some(rotary_fraction(rotary_dim, d_head)),
        rotary_emb_base: Some(
            file.get_f32(&key("rope.freq_base"))
                .map_or(10_000.0, f64::from),
        ),
        rope_parameters: None,
        rope_scaling: gguf_rope_scaling(file, ARCH)?,
        layer_norm_eps: f64::from(file.get_f32(&key("attention.layer_norm_epsilon"))?),
        use_parallel_residual: file.get_bool(&key("use_parallel_residual"))?,
        tie_word_embeddings: file.tensor_info("output.weight").is_none(),
        attention_bias: file.tensor_info("blk.0.attn_qkv.bias").is_some(),
        bos_token_id: None,
        eos_token_id: None,
    };
    hf.to_transformer()
}

/// Number of weight elements the config implies, matrices and norms (the biases of linear maps
/// and position tables aside): progress bars, and `fidelis inspect --config`'s estimate.
pub fn estimate_elements(cfg: &TransformerConfig) -> u64 {
    let d = cfg.d_model as u64;
    let attn = d * (cfg.n_heads + 2 * cfg.n_kv_heads) as u64 * cfg.d_head as u64
        + (cfg.n_heads * cfg.d_head) as u64 * d;
    let mlp = if cfg.gated_mlp { 3 } else { 2 } * d * cfg.d_mlp as u64;
    // A LayerNorm has a bias beside its weight; an RMSNorm has the weight alone.
    let norm = match cfg.norm {
        crate::config::NormKind::LayerNorm => 2 * d,
        crate::config::NormKind::RmsNorm => d,
    };
    let qk_norms = if cfg.qk_norm {
        2 * cfg.d_head as u64
    } else {
        0
    };
    let per_layer = attn + mlp + if cfg.post_norms { 4 } else { 2 } * norm + qk_norms;
    let embed = cfg.d_vocab as u64 * d * if cfg.tied_embeddings { 1 } else { 2 };
    cfg.n_layers as u64 * per_layer + embed + norm
}

#[cfg(test)]
mod tests {
    use super::rotary_fraction;

    #[test]
    fn rotary_fraction_gives_the_width_back() {
        for d_head in 1..=512usize {
            for rotary_dim in (2..=d_head).step_by(2) {
                let pct = rotary_fraction(rotary_dim, d_head);
                assert!((0.0..=1.0).contains(&pct));
                assert_eq!(
                    (d_head as f64 * pct) as usize,
                    rotary_dim,
                    "{rotary_dim}/{d_head}"
                );
            }
        }
    }
}
