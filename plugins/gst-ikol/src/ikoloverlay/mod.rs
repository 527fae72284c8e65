// SPDX-License-Identifier: MIT OR Apache-2.0
//! `ikoloverlay`: draws the body meshes, skeletons and boxes of the `IkolFrameMeta` into the
//! video.

use gst::glib;
use gst::prelude::*;

mod imp;

/// The `mode` property: what to draw.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstIkolOverlayMode")]
pub enum OverlayMode {
    /// Mesh, then skeleton, then boxes with track ids on top.
    #[default]
    #[enum_value(name = "Mesh, skeleton and boxes", nick = "all")]
    All,
    /// Only the shaded body meshes.
    #[enum_value(name = "Shaded body mesh only", nick = "mesh")]
    Mesh,
    /// Only the 2D skeletons.
    #[enum_value(name = "2D skeleton only", nick = "skeleton")]
    Skeleton,
    /// Only the boxes with their track-id labels.
    #[enum_value(name = "Boxes with track ids only", nick = "boxes")]
    Boxes,
}

impl OverlayMode {
    pub fn mesh(self) -> bool {
        matches!(self, Self::All | Self::Mesh)
    }
    pub fn skeleton(self) -> bool {
        matches!(self, Self::All | Self::Skeleton)
    }
    pub fn boxes(self) -> bool {
        matches!(self, Self::All | Self::Boxes)
    }
}

glib::wrapper! {
    pub struct IkolOverlay(ObjectSubclass<imp::IkolOverlay>)
        @extends gst_video::VideoFilter, gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "ikoloverlay",
        gst::Rank::NONE,
        IkolOverlay::static_type(),
    )
}
