//! Network configuration: variant (IKOL-24 or HybrIK-29), ResNet depth and widths, heatmap depth,
//! input size. `Config::default()` / [`Config::upstream`] is the published network; tests use
//! [`Config::tiny`].

use serde::{Deserialize, Serialize};

use ikol_types::joints::{HYBRIK_JOINTS, HYBRIK29_FLIP_PAIRS, SMPL_JOINTS, SMPL24_FLIP_PAIRS};

/// Which heads the network has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// IKOL (`IKOL24`) and HybrIK's `Simple3DPoseBaseSMPL24`: 24 heatmaps, 23 twists, shape,
    /// 5 leaf quaternions.
    #[default]
    Ikol24,
    /// HybrIK's `Simple3DPoseBaseSMPL`: 29 heatmaps (SMPL-24 + 5 leaves), 23 twists, shape.
    Hybrik29,
}

impl Variant {
    /// Number of heatmaps (joints).
    pub fn num_joints(self) -> usize {
        match self {
            Variant::Ikol24 => SMPL_JOINTS,
            Variant::Hybrik29 => HYBRIK_JOINTS,
        }
    }

    /// Whether the network predicts leaf quaternions (`decleaf`).
    pub fn has_leaf(self) -> bool {
        matches!(self, Variant::Ikol24)
    }

    /// Left/right joint pairs swapped by the flip test.
    pub fn flip_pairs(self) -> &'static [(usize, usize)] {
        match self {
            Variant::Ikol24 => &SMPL24_FLIP_PAIRS,
            Variant::Hybrik29 => &HYBRIK29_FLIP_PAIRS,
        }
    }

    /// Lower-case name (`ikol24`, `hybrik29`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Ikol24 => "ikol24",
            Variant::Hybrik29 => "hybrik29",
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Variant {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ikol24" | "ikol" | "smpl24" => Ok(Variant::Ikol24),
            "hybrik29" | "hybrik" | "smpl29" => Ok(Variant::Hybrik29),
            other => Err(crate::Error::InvalidInput(format!(
                "unknown network variant {other:?} (expected ikol24 or hybrik29)"
            ))),
        }
    }
}

/// ResNet residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34), expansion 1.
    Basic,
    /// 1x1, 3x3 (strided), 1x1 convolutions (ResNet-50+), expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels per `planes`.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// ResNet body: block type, blocks per stage, stem width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetConfig {
    pub block: BlockKind,
    /// Blocks in stages 1..4.
    pub layers: [usize; 4],
    /// Stem width; stage widths are `width * [1, 2, 4, 8]` (upstream 64).
    pub width: usize,
}

impl ResNetConfig {
    /// ResNet-18/34/50/101/152 at width 64.
    pub fn depth(depth: usize) -> Option<Self> {
        let (block, layers) = match depth {
            18 => (BlockKind::Basic, [2, 2, 2, 2]),
            34 => (BlockKind::Basic, [3, 4, 6, 3]),
            50 => (BlockKind::Bottleneck, [3, 4, 6, 3]),
            101 => (BlockKind::Bottleneck, [3, 4, 23, 3]),
            152 => (BlockKind::Bottleneck, [3, 8, 36, 3]),
            _ => return None,
        };
        Some(Self {
            block,
            layers,
            width: 64,
        })
    }

    /// Channels of the last stage (the features the heads read): 512 for ResNet-18/34, 2048 for
    /// ResNet-50 at width 64.
    pub fn feature_channels(&self) -> usize {
        self.width * 8 * self.block.expansion()
    }

    /// Conventional depth number when the layout is a standard one.
    pub fn depth_number(&self) -> Option<usize> {
        [18, 34, 50, 101, 152].into_iter().find(|&d| {
            ResNetConfig::depth(d).is_some_and(|c| c.block == self.block && c.layers == self.layers)
        })
    }
}

/// The whole network.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub variant: Variant,
    pub resnet: ResNetConfig,
    /// Channels of the three transposed convolutions (upstream `NUM_DECONV_FILTERS` 256 x 3).
    pub deconv_filters: [usize; 3],
    /// Depth bins of the heatmap volume (upstream `DEPTH_DIM` 64).
    pub depth_dim: usize,
    /// Width of fc1/fc2 (upstream 1024).
    pub fc_dim: usize,
    /// Shape coefficients predicted (upstream 10).
    pub num_betas: usize,
    /// Square input side in pixels (upstream 256). The heatmap is `input_size / 4` square: the
    /// body downsamples by 32 and the three transposed convolutions upsample by 8.
    pub input_size: usize,
    /// Dropout probability after fc1 and fc2 (upstream 0.5).
    pub dropout: f32,
    /// BatchNorm epsilon and momentum (PyTorch defaults 1e-5, 0.1).
    pub bn_eps: f64,
    pub bn_momentum: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self::upstream(Variant::Ikol24)
    }
}

impl Config {
    /// The published network: ResNet-34, 3 x 256 deconv filters, 64 depth bins, 256 x 256 input.
    pub fn upstream(variant: Variant) -> Self {
        Self {
            variant,
            resnet: ResNetConfig {
                block: BlockKind::Basic,
                layers: [3, 4, 6, 3],
                width: 64,
            },
            deconv_filters: [256; 3],
            depth_dim: 64,
            fc_dim: 1024,
            num_betas: 10,
            input_size: 256,
            dropout: 0.5,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
        }
    }

    /// A very small network for tests: ResNet-34 layout at width 4, 8-channel deconvs, 8 depth
    /// bins, fc 16, 64 x 64 input (16^2 x 8 heatmaps).
    pub fn tiny(variant: Variant) -> Self {
        Self {
            resnet: ResNetConfig {
                width: 4,
                ..Self::upstream(variant).resnet
            },
            deconv_filters: [8; 3],
            depth_dim: 8,
            fc_dim: 16,
            input_size: 64,
            ..Self::upstream(variant)
        }
    }

    /// Heatmap side (width = height) in cells.
    pub fn heatmap_size(&self) -> usize {
        self.input_size / 4
    }

    /// Number of heatmaps.
    pub fn num_joints(&self) -> usize {
        self.variant.num_joints()
    }

    /// Checks sizes that the architecture cannot handle.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::InvalidInput(m));
        if self.input_size == 0 || !self.input_size.is_multiple_of(32) {
            return bad(format!(
                "input size {} must be a positive multiple of 32",
                self.input_size
            ));
        }
        if self.resnet.width == 0
            || self.deconv_filters.contains(&0)
            || self.depth_dim == 0
            || self.fc_dim == 0
        {
            return bad(format!("zero width in {self:?}"));
        }
        if self.resnet.layers.contains(&0) {
            return bad("every ResNet stage needs at least one block".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} not in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_depths() {
        let r34 = ResNetConfig::depth(34).unwrap();
        assert_eq!(r34.feature_channels(), 512);
        assert_eq!(r34.depth_number(), Some(34));
        assert_eq!(ResNetConfig::depth(50).unwrap().feature_channels(), 2048);
        assert_eq!(Config::default().resnet, r34);
        assert_eq!(Config::default().heatmap_size(), 64);
        assert!(Config::tiny(Variant::Hybrik29).validate().is_ok());
        assert_eq!("HybrIK29".parse::<Variant>().unwrap(), Variant::Hybrik29);
        assert!("x".parse::<Variant>().is_err());
    }
}
