// SPDX-License-Identifier: MIT OR Apache-2.0
//! `ikolexport`: writes the results of every frame as one JSON line (to a file or stdout) and
//! optionally posts them on the bus; the video passes through untouched.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct IkolExport(ObjectSubclass<imp::IkolExport>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "ikolexport",
        gst::Rank::NONE,
        IkolExport::static_type(),
    )
}
