// SPDX-License-Identifier: MIT OR Apache-2.0
//! # gstikol
//!
//! SECTION:plugin-ikol
//!
//! GStreamer plugin `ikol`: 3D human pose and body-mesh recovery. Elements, in pipeline order:
//! `ikolcrop` (people to process), `ikolbackbone` (network), `ikolsolver` (inverse kinematics),
//! `ikolmesher` (body mesh), `ikoloverlay` (drawing) and `ikolexport` (JSON lines); for datasets,
//! `ikol3dpwsrc` (3DPW frames with ground truth) and `ikoleval` (the papers' metrics). They pass
//! results along in the frame meta `IkolFrameMeta` (see [`meta`]).

pub mod common;
pub mod meta;

pub mod ikol3dpwsrc;
pub mod ikolbackbone;
pub mod ikolcrop;
pub mod ikoleval;
pub mod ikolexport;
pub mod ikolmesher;
pub mod ikoloverlay;
pub mod ikolsolver;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), gst::glib::BoolError> {
    meta::register();
    ikolcrop::register(plugin)?;
    ikolbackbone::register(plugin)?;
    ikolsolver::register(plugin)?;
    ikolmesher::register(plugin)?;
    ikoloverlay::register(plugin)?;
    ikolexport::register(plugin)?;
    ikol3dpwsrc::register(plugin)?;
    ikoleval::register(plugin)?;
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
