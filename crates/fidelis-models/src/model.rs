//! Loading a model and its tokenizer from a Hugging Face folder or a GGUF file.

use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::Deserialize;

use crate::config::{Architecture, FreqFactors, Positional, RopeScaling, TransformerConfig};
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
    &["gemma2", "llama", "mistral", "qwen2", "qwen3", "gptneox"];

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

pub(crate) fn build_with_progress<T>(
    src: &dyn WeightSource,
    device: &Device,
    total: u64,
    progress: LoadProgress<'_>,
    build: impl FnOnce(&Loader<'_>) -> Result<T>,
) -> Result<T> {
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
        other if crate::seq2seq::is_seq2seq_model_type(other) => {
            return Err(ModelError::Unsupported(format!(
                "`{other}` is an encoder-decoder model: load it with Seq2SeqModel::load \
                 (decoder-only architectures: {})",
                SUPPORTED_MODEL_TYPES.join(", ")
            )));
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
    } else if cfg.architecture == Architecture::Gemma2 {
        let src = GgufSource::gemma2(&file);
        build_with_progress(&src, device, total, progress, |w| llama::build(cfg, w))?
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
        "llama" | "qwen2" | "qwen3" | "mistral" | "gemma2" => gguf_config(file, &arch)?,
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
        cfg.check_sizes()?;
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

/// The rope scaling of a GGUF file's metadata in Hugging Face's `rope_scaling` form: llama.cpp
/// writes `{arch}.rope.scaling.type` (`none`, `linear`, `yarn`, ...) and, for `linear`,
/// `{arch}.rope.scaling.factor`. Llama 3.1's scaling is not in the metadata but in a tensor; see
/// [`gguf_rope_freqs`].
fn gguf_rope_scaling(file: &GgufFile, arch: &str) -> Result<Option<serde_json::Value>> {
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

/// The GGUF tensor of per-frequency rope factors.
const ROPE_FREQS: &str = "rope_freqs.weight";

/// The rope scaling of a Llama-family GGUF file with a `rope_freqs` tensor, given the scaling
/// its metadata describes (`scaling`), or `scaling` itself when there is no such tensor.
///
/// llama.cpp's converter writes Llama 3.1's `llama3` scaling as `rope_freqs`, one factor per
/// rotated pair of dimensions (`LlamaModel.generate_extra_tensors` in `convert_hf_to_gguf.py`:
/// 1 for the high frequencies, `factor` for the low ones, `1 / ((1 − s)/factor + s)` between),
/// and no `rope.scaling` keys; its rotary kernel divides each frequency by its factor
/// (`ggml_rope_ext`'s `freq_factors`) on top of any linear scaling, which is folded in here.
/// A table of the wrong length, or with a factor that is not a positive number, is an error.
fn gguf_rope_freqs(
    file: &GgufFile,
    rotary_dim: usize,
    scaling: RopeScaling,
) -> Result<RopeScaling> {
    let Some(info) = file.tensor_info(ROPE_FREQS) else {
        return Ok(scaling);
    };
    let expected = vec![rotary_dim / 2];
    if info.shape != expected {
        return Err(ModelError::ShapeMismatch {
            tensor: format!("{ROPE_FREQS} (one rope factor per pair of rotated dimensions)"),
            expected,
            found: info.shape.clone(),
        });
    }
    let (_, mut factors) = file.tensor_f32(ROPE_FREQS)?;
    if let Some(bad) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
        return Err(ModelError::Gguf {
            path: file.path().to_path_buf(),
            message: format!("{ROPE_FREQS} holds the factor {bad}; rope factors must be positive"),
        });
    }
    match scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => factors.iter_mut().for_each(|f| *f *= factor as f32),
        other => {
            return Err(ModelError::Unsupported(format!(
                "a GGUF with both a {ROPE_FREQS} tensor and rope scaling {other:?}"
            )));
        }
    }
    Ok(RopeScaling::Factors(FreqFactors::new(&factors)))
}

/// The Llama-family config a GGUF file's metadata describes (`llama`, `mistral`, `qwen2`,
/// `qwen3`, `gemma2`), with a `rope_freqs` tensor's factors as its rope scaling.
fn gguf_config(file: &GgufFile, arch: &str) -> Result<TransformerConfig> {
    let key = |k: &str| format!("{arch}.{k}");
    let as_usize = |k: &str| -> Result<usize> { Ok(file.get_u64(&key(k))? as usize) };
    let n_heads = as_usize("attention.head_count")?;
    let d_model = as_usize("embedding_length")?;
    let n_layers = as_usize("block_count")?;
    let vocab = gguf_vocab_size(file, arch)?;
    let gemma2 = arch == "gemma2";
    let gemma = if gemma2 {
        Some(gguf_gemma2_settings(file, d_model, n_heads, n_layers)?)
    } else {
        None
    };
    let hf = LlamaConfig {
        model_type: arch.to_string(),
        vocab_size: vocab,
        hidden_size: d_model,
        intermediate_size: as_usize("feed_forward_length")?,
        num_hidden_layers: n_layers,
        num_attention_heads: n_heads,
        num_key_value_heads: Some(as_usize("attention.head_count_kv").unwrap_or(n_heads)),
        head_dim: match &gemma {
            Some(g) => Some(g.head_dim),
            None => as_usize("attention.key_length").ok(),
        },
        max_position_embeddings: as_usize("context_length")?,
        rms_norm_eps: f64::from(file.get_f32(&key("attention.layer_norm_rms_epsilon"))?),
        rope_theta: file
            .get_f32(&key("rope.freq_base"))
            .map_or(10_000.0, f64::from),
        rope_scaling: gguf_rope_scaling(file, arch)?,
        rope_parameters: None,
        hidden_act: "silu".into(),
        // llama.cpp's Gemma 2 MLP is GeGLU with ggml's (tanh) GELU.
        hidden_activation: gemma2.then(|| "gelu_pytorch_tanh".into()),
        query_pre_attn_scalar: gemma.as_ref().map(|g| g.query_pre_attn_scalar),
        attn_logit_softcapping: gemma.as_ref().map(|g| Some(g.attn_softcap)),
        final_logit_softcapping: gemma.as_ref().map(|g| Some(g.final_softcap)),
        use_bidirectional_attention: None,
        tie_word_embeddings: file.tensor_info("output.weight").is_none(),
        attention_bias: file.tensor_info("blk.0.attn_q.bias").is_some(),
        mlp_bias: false,
        sliding_window: gemma.as_ref().map(|g| g.sliding_window),
        use_sliding_window: None,
        max_window_layers: None,
        layer_types: None,
        bos_token_id: None,
        eos_token_id: None,
    };
    let mut cfg = hf.to_transformer()?;
    if let Positional::Rotary {
        rotary_dim,
        ref mut scaling,
        ..
    } = cfg.positional
    {
        *scaling = gguf_rope_freqs(file, rotary_dim, *scaling)?;
    }
    Ok(cfg)
}

/// What a `gemma2` GGUF's metadata says, or llama.cpp leaves implied, beyond a Llama's.
struct Gemma2Settings {
    head_dim: usize,
    query_pre_attn_scalar: f64,
    attn_softcap: f64,
    final_softcap: f64,
    sliding_window: usize,
}

/// Gemma 2 as llama.cpp loads it (`llm_load_hparams` for `LLM_ARCH_GEMMA2`, `llm_build_gemma2`):
/// - the head width is `attention.key_length` (`value_length` must agree), else
///   `d_model / n_heads`;
/// - attention scores are scaled by `1/√(d_model / n_heads)` for the 46-layer model (Gemma 2
///   27B, whose `query_pre_attn_scalar` is 4608 / 32 = 144) and by `1/√head_dim` otherwise (2B
///   and 9B: 256). The file has no key for `query_pre_attn_scalar`, so a model whose value is
///   neither is read as llama.cpp runs it, not as its Hugging Face config says;
/// - both soft caps are always applied, `attn_logit_softcapping` (default 50) and
///   `final_logit_softcapping` (default 30);
/// - even layers slide over `attention.sliding_window` positions (default 4096), odd layers see
///   the whole context (`set_swa_pattern(2)`).
fn gguf_gemma2_settings(
    file: &GgufFile,
    d_model: usize,
    n_heads: usize,
    n_layers: usize,
) -> Result<Gemma2Settings> {
    const ARCH: &str = "gemma2";
    /// The block count llama.cpp reads as Gemma 2 27B.
    const GEMMA2_27B_LAYERS: usize = 46;
    let key = |k: &str| format!("{ARCH}.{k}");
    let optional_usize = |k: &str| {
        file.get(&key(k))
            .map(|_| file.get_usize(&key(k)))
            .transpose()
    };
    let optional_f32 = |k: &str, default: f32| -> Result<f64> {
        Ok(f64::from(match file.get(&key(k)) {
            Some(_) => file.get_f32(&key(k))?,
            None => default,
        }))
    };
    let per_head = d_model.checked_div(n_heads).unwrap_or(0);
    let head_dim = optional_usize("attention.key_length")?.unwrap_or(per_head);
    if let Some(v) = optional_usize("attention.value_length")?
        && v != head_dim
    {
        return Err(ModelError::Unsupported(format!(
            "a gemma2 GGUF with key_length {head_dim} and value_length {v} (they must be equal)"
        )));
    }
    let scalar = if n_layers == GEMMA2_27B_LAYERS {
        per_head
    } else {
        head_dim
    };
    Ok(Gemma2Settings {
        head_dim,
        query_pre_attn_scalar: scalar as f64,
        attn_softcap: optional_f32("attn_logit_softcapping", 50.0)?,
        final_softcap: optional_f32("final_logit_softcapping", 30.0)?,
        sliding_window: optional_usize("attention.sliding_window")?.unwrap_or(4096),
    })
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
    if file.tensor_info(ROPE_FREQS).is_some() {
        return Err(ModelError::Unsupported(format!(
            "a {ROPE_FREQS} tensor in a gptneox GGUF (llama.cpp reads it for Llama-family models)"
        )));
    }
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
