// SPDX-License-Identifier: MIT OR Apache-2.0
//! `ikolcrop`: the people to process in each frame, with stable track ids.

use gst::glib;
use gst::prelude::*;

mod imp;

/// The `detector` property: what finds people when nothing is tracked.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstIkolCropDetector")]
pub enum CropDetector {
    /// No detector: boxes from upstream metas, `roi` and tracking only.
    #[default]
    #[enum_value(name = "None: boxes from metas, roi and tracking", nick = "none")]
    None,
    /// BlazePose's person detector (mediapipe 0.10.21, pretrained).
    #[enum_value(name = "BlazePose person detector (pretrained)", nick = "blazepose")]
    BlazePose,
}

impl CropDetector {
    /// The name `ikol_detect::create_detector` takes.
    pub fn name(self) -> &'static str {
        match self {
            CropDetector::None => "none",
            CropDetector::BlazePose => "blazepose",
        }
    }
}

glib::wrapper! {
    pub struct IkolCrop(ObjectSubclass<imp::IkolCrop>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "ikolcrop",
        gst::Rank::NONE,
        IkolCrop::static_type(),
    )
}
