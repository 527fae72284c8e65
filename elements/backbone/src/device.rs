//! Device selection: CPU by default; CUDA through candle when the crate is built with the
//! `cuda` feature (`cudnn` adds cuDNN convolutions). Asking for CUDA in a build without it, or on
//! a machine without a usable GPU, is an [`Error::CudaUnavailable`], never a panic.

use candle_core::Device;

use crate::{Error, Result};

/// Where the network runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// CUDA device by ordinal.
    Cuda(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;

    /// `cpu`, `cuda`, `gpu` (device 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "unknown device {s:?} (expected cpu, cuda or cuda:N)"
                    ))
                }),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Whether this build can use CUDA at all (the `cuda` feature).
pub const CUDA_COMPILED: bool = cfg!(feature = "cuda");

/// Opens the device.
pub fn open_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(ordinal) => {
            if !CUDA_COMPILED {
                return Err(Error::CudaUnavailable {
                    ordinal,
                    reason: "this build of ikol-backbone has no CUDA support; rebuild with \
                             `--features cuda` (needs the CUDA toolkit with nvcc)"
                        .into(),
                });
            }
            Device::new_cuda(ordinal).map_err(|e| Error::CudaUnavailable {
                ordinal,
                // candle appends a backtrace when RUST_BACKTRACE is set: the cause is line one.
                reason: e.to_string().lines().next().unwrap_or_default().to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_open() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "CUDA:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(1)
        );
        assert_eq!(
            "gpu".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert!(open_device(DeviceChoice::Cpu).unwrap().is_cpu());
        // No GPU on the test machines: an error, not a panic, with or without the feature.
        if !candle_core::utils::cuda_is_available() {
            let e = open_device(DeviceChoice::Cuda(0)).unwrap_err();
            assert!(
                matches!(e, Error::CudaUnavailable { ordinal: 0, .. }),
                "{e}"
            );
        }
    }
}
