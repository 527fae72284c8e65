// SPDX-License-Identifier: MIT OR Apache-2.0
//! # gstikol
//!
//! SECTION:plugin-ikol
//!
//! GStreamer plugin `ikol`: 3D human pose and body-mesh recovery. It registers the frame meta
//! `IkolFrameMeta` (a `GstCustomMeta` holding one structure per frame with the people found) that
//! every ikol element reads and writes; the elements are added by the plugin issue.

pub mod meta;

fn plugin_init(_plugin: &gst::Plugin) -> Result<(), gst::glib::BoolError> {
    meta::register();
    Ok(())
}

gst::plugin_define!(
    ikol,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    env!("CARGO_PKG_VERSION"),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    "https://example.invalid/ikol"
);
