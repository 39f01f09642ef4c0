//! Choosing where tensors live: the CPU, or a CUDA GPU when built with the `cuda` feature.

use candle_core::Device;

use crate::error::{Error, Result};

/// Parses `cpu`, `cuda` or `cuda:N` into a device, failing clearly when this build has no CUDA
/// support or no such GPU is present.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_lowercase();
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                Error::Setting(format!("unknown device '{spec}': use cpu, cuda or cuda:N"))
            })?,
        None => {
            return Err(Error::Setting(format!(
                "unknown device '{spec}': use cpu, cuda or cuda:N"
            )))
        }
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(Error::Setting(format!(
            "device '{spec}' asked for, but this build has no CUDA support: rebuild with `cargo build --release --features cuda`"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| Error::Setting(format!("cannot open GPU {ordinal}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_and_nonsense_is_refused() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("unknown device"));
        assert!(parse_device("cuda:x")
            .unwrap_err()
            .to_string()
            .contains("unknown device"));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let err = parse_device("cuda:0").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
