// SPDX-License-Identifier: MIT OR Apache-2.0
//! `ikolmesher`: the posed body mesh of every solved person.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct IkolMesher(ObjectSubclass<imp::IkolMesher>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "ikolmesher",
        gst::Rank::NONE,
        IkolMesher::static_type(),
    )
}
