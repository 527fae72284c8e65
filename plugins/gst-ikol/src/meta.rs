//! The frame meta shared by the ikol elements: a `GstCustomMeta` named [`META_NAME`]. Registered
//! with no tags and no transform function, so it is copied through videoconvert, videoscale and
//! encoders (verified on GStreamer 1.22, see the build notes). Any application can read it by
//! name after the plugin is loaded.

use gst::meta::CustomMeta;

/// Name of the custom meta carrying per-frame results.
pub const META_NAME: &str = "IkolFrameMeta";

/// Registers the meta once per process; safe to call from every element and reader.
pub fn register() {
    if !CustomMeta::is_registered(META_NAME) {
        CustomMeta::register(META_NAME, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_attaches_and_reads_back() {
        gst::init().unwrap();
        register();
        register(); // idempotent
        let mut buf = gst::Buffer::new();
        {
            let b = buf.get_mut().unwrap();
            let mut m = CustomMeta::add(b, META_NAME).unwrap();
            m.mut_structure().set("people", 2u32);
        }
        let m = CustomMeta::from_buffer(&buf, META_NAME).unwrap();
        assert_eq!(m.structure().get::<u32>("people").unwrap(), 2);
    }
}
