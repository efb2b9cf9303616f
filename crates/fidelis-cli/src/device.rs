//! `--device cpu|flex|ndarray|wgpu|cuda[:N]`: the one place a backend is named.

use anyhow::{Result, bail};
use burn::prelude::*;

/// Backends compiled into this binary, in the order `--device cpu` tries them.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut backends = Vec::new();
    if cfg!(feature = "flex") {
        backends.push("flex");
    }
    if cfg!(feature = "ndarray") {
        backends.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        backends.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        backends.push("cuda");
    }
    backends
}

/// Whether a `--device` value names a CPU backend (`cpu`, `flex`, `ndarray`).
pub fn is_cpu(spec: &str) -> bool {
    matches!(spec, "cpu" | "flex" | "ndarray")
}

/// The default number of concurrent passes on `device`: every core of a CPU (one pass keeps
/// little more than one busy), one on a GPU (a pass fills it already).
pub fn default_workers(device: &str) -> usize {
    if is_cpu(device) {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        1
    }
}

/// Parses a `--device` value into a Burn device.
///
/// `cpu` picks the fastest CPU backend compiled in (flex, measured ~2x ndarray on a 2-core box).
pub fn parse_device(spec: &str) -> Result<Device> {
    // `index` is read only by the GPU backends compiled in.
    #[allow(unused_variables)]
    let (name, index) = match spec.split_once(':') {
        Some((name, index)) => {
            let index: usize = index
                .parse()
                .map_err(|_| anyhow::anyhow!("device index in `{spec}` is not a number"))?;
            (name, Some(index))
        }
        None => (spec, None),
    };
    let missing = |feature: &str| {
        anyhow::anyhow!(
            "device `{spec}` needs the `{feature}` feature; this binary has: {}",
            compiled_backends().join(", ")
        )
    };
    match name {
        "cpu" => {
            if cfg!(feature = "flex") {
                parse_device("flex")
            } else if cfg!(feature = "ndarray") {
                parse_device("ndarray")
            } else {
                Err(missing("flex"))
            }
        }
        "flex" => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
            #[cfg(not(feature = "flex"))]
            Err(missing("flex"))
        }
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            return Ok(Device::ndarray());
            #[cfg(not(feature = "ndarray"))]
            Err(missing("ndarray"))
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            return Ok(match index {
                Some(i) => Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(i)),
                None => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            });
            #[cfg(not(feature = "wgpu"))]
            Err(missing("wgpu"))
        }
        "cuda" => {
            #[cfg(feature = "cuda")]
            return Ok(Device::cuda(index.unwrap_or(0)));
            #[cfg(not(feature = "cuda"))]
            Err(missing("cuda"))
        }
        other => bail!("unknown device `{other}` (expected cpu, flex, ndarray, wgpu or cuda[:N])"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_errors() {
        assert!(parse_device("cpu").is_ok());
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("unknown device `tpu`"), "{err}");
        assert!(
            parse_device("cuda:x")
                .unwrap_err()
                .to_string()
                .contains("not a number")
        );
        if !cfg!(feature = "cuda") {
            let err = parse_device("cuda:0").unwrap_err().to_string();
            assert!(err.contains("`cuda` feature"), "{err}");
        }
    }
}
