// SPDX-License-Identifier: MIT OR Apache-2.0
//! `ikoleval`: scores each frame's predictions against the ground truth of a dataset source
//! (3DPW protocol: PVE, MPJPE, PA-MPJPE) and reports the table at end of stream.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct IkolEval(ObjectSubclass<imp::IkolEval>) @extends gst_base::BaseSink, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "ikoleval",
        gst::Rank::NONE,
        IkolEval::static_type(),
    )
}
