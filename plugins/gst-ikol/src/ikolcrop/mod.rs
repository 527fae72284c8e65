// SPDX-License-Identifier: MIT OR Apache-2.0
//! `ikolcrop`: the people to process in each frame, with stable track ids.

use gst::glib;
use gst::prelude::*;

mod imp;

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
