// SPDX-License-Identifier: MIT OR Apache-2.0
//! `ikol3dpwsrc`: plays 3DPW sequences (JPEG frames in order) with their ground truth, camera
//! intrinsics and ground-truth boxes in the frame meta.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct Ikol3dpwSrc(ObjectSubclass<imp::Ikol3dpwSrc>) @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "ikol3dpwsrc",
        gst::Rank::NONE,
        Ikol3dpwSrc::static_type(),
    )
}
