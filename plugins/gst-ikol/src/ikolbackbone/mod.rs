// SPDX-License-Identifier: MIT OR Apache-2.0
//! `ikolbackbone`: the heatmap network per person crop.

use gst::glib;
use gst::prelude::*;

mod imp;

/// The `flip-test` property: whether the network also sees each crop mirrored (HybrIK's flip
/// test). The nicks keep `flip-test=true` / `false` of the boolean this once was.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstIkolBackboneFlipTest")]
pub enum FlipTest {
    /// One pass per crop.
    #[default]
    #[enum_value(name = "Off: one pass per crop", nick = "false")]
    Off,
    /// The crop and its mirror image on every frame, averaged: twice the network time.
    #[enum_value(name = "On: the crop and its mirror image, averaged", nick = "true")]
    On,
    /// model=blazepose: the crop and its mirror image on alternate frames, each frame's pass
    /// averaged with the previous frame's ([`ikol_detect::blazepose_model::AlternatingFlip`]):
    /// one pass per crop, half a frame late. The heatmap network runs one pass (off).
    #[enum_value(
        name = "Alternate: the crop and its mirror image in turn, each averaged with the frame before",
        nick = "alternate"
    )]
    Alternate,
}

/// The `variant` property: which network the checkpoint holds.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstIkolBackboneVariant")]
pub enum BackboneVariant {
    /// IKOL: 24 joints, twist, shape and 5 leaf rotations.
    #[default]
    #[enum_value(name = "IKOL 24 joints + leaf rotations", nick = "ikol24")]
    Ikol24,
    /// HybrIK: 29 joints (24 + 5 leaves), twist, shape.
    #[enum_value(name = "HybrIK 29 joints", nick = "hybrik29")]
    Hybrik29,
}

impl From<BackboneVariant> for ikol_backbone::Variant {
    fn from(v: BackboneVariant) -> Self {
        match v {
            BackboneVariant::Ikol24 => Self::Ikol24,
            BackboneVariant::Hybrik29 => Self::Hybrik29,
        }
    }
}

/// The `model` property: which network estimates the joints.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstIkolBackboneModel")]
pub enum BackboneModel {
    /// The paper's heatmap network (ResNet + deconvolutions + FC branch) from `checkpoint`.
    #[default]
    #[enum_value(
        name = "Heatmap network from the checkpoint (IKOL / HybrIK)",
        nick = "heatmap"
    )]
    Heatmap,
    /// The pretrained BlazePose landmark model (mediapipe 0.10.21), mapped to SMPL-24 joints.
    #[enum_value(
        name = "BlazePose landmarks mapped to SMPL-24 (pretrained)",
        nick = "blazepose"
    )]
    BlazePose,
    /// HKMR's hierarchical kinematic regressor from `checkpoint`: the body directly (theta,
    /// shape, camera translation).
    #[enum_value(
        name = "HKMR hierarchical body regressor from the checkpoint",
        nick = "hkmr"
    )]
    Hkmr,
    /// HMR / SPIN's flat iterative body regressor from `checkpoint`.
    #[enum_value(
        name = "HMR/SPIN flat body regressor from the checkpoint",
        nick = "hmr"
    )]
    Hmr,
}

/// The `device` property: where the network runs (`device-index` picks the GPU).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstIkolBackboneDevice")]
pub enum BackboneDevice {
    #[default]
    #[enum_value(name = "CPU", nick = "cpu")]
    Cpu,
    /// An NVIDIA GPU through candle's CUDA backend (a build with the `cuda` feature).
    #[enum_value(name = "CUDA GPU (build with the cuda feature)", nick = "cuda")]
    Cuda,
}

glib::wrapper! {
    pub struct IkolBackbone(ObjectSubclass<imp::IkolBackbone>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "ikolbackbone",
        gst::Rank::NONE,
        IkolBackbone::static_type(),
    )
}
