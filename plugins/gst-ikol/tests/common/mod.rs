//! Shared set-up of the element tests: plugin registration, frames with a given meta, and the
//! bus an element posts its errors to.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Once;

use gst::prelude::*;
use gstikol::meta::FrameMeta;

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstikol::plugin_register_static().unwrap();
    });
}

/// A harness for `factory` with `props` (set before it starts), input caps `caps`, and a bus
/// for its messages.
pub fn harness(
    factory: &str,
    props: &[(&str, &str)],
    caps: &str,
) -> (gst_check::Harness, gst::Bus) {
    init();
    let line = props
        .iter()
        .fold(factory.to_owned(), |l, (k, v)| format!("{l} {k}=\"{v}\""));
    let mut h = gst_check::Harness::new_parse(&line);
    let bus = gst::Bus::new();
    h.element().unwrap().set_bus(Some(&bus));
    h.set_src_caps_str(caps);
    (h, bus)
}

/// The element under test (by factory name) inside a [`harness`].
pub fn dut(h: &mut gst_check::Harness, factory: &str) -> gst::Element {
    h.find_element(factory).unwrap()
}

/// `factory` with `props`, not started, with a bus: for state-change failures.
pub fn element(factory: &str, props: &[(&str, &str)]) -> (gst::Element, gst::Bus) {
    init();
    let e = gst::ElementFactory::make(factory).build().unwrap();
    for (k, v) in props {
        e.set_property_from_str(k, v);
    }
    let bus = gst::Bus::new();
    e.set_bus(Some(&bus));
    (e, bus)
}

/// A uniform packed-RGB frame (`w*h*3` bytes) carrying `meta` (if any).
pub fn frame(w: usize, h: usize, value: u8, meta: Option<&FrameMeta>) -> gst::Buffer {
    let mut buf = gst::Buffer::from_mut_slice(vec![value; w * h * 3]);
    if let Some(m) = meta {
        m.write(buf.get_mut().unwrap()).unwrap();
    }
    buf
}

/// The text of the first error on `bus`, if any.
pub fn error_text(bus: &gst::Bus) -> Option<String> {
    bus.pop_filtered(&[gst::MessageType::Error])
        .map(|m| match m.view() {
            gst::MessageView::Error(e) => format!("{} ({:?})", e.error(), e.debug()),
            _ => unreachable!(),
        })
}

pub fn rgb_caps(w: usize, h: usize) -> String {
    format!("video/x-raw,format=RGB,width={w},height={h},framerate=30/1")
}

/// The meta of a buffer that must have one.
pub fn meta_of(buf: &gst::Buffer) -> FrameMeta {
    FrameMeta::read(buf)
        .unwrap()
        .expect("buffer has an IkolFrameMeta")
}
