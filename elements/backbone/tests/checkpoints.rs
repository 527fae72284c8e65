//! Bad checkpoints give errors that name the file and the offending keys.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use ikol_backbone::weights::{read_checkpoint, save_safetensors};
use ikol_backbone::{Backbone, Config, Error, Variant};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[test]
fn truncated_pth_is_unreadable_and_named() -> Result<()> {
    let bytes = std::fs::read(data("ikol24_r34w2.pth"))?;
    let path = tmp("truncated.pth");
    std::fs::write(&path, &bytes[..bytes.len() / 2])?;
    let e = Backbone::load(&path, Variant::Ikol24, &Device::Cpu).unwrap_err();
    assert!(matches!(e, Error::CheckpointUnreadable { .. }), "{e:?}");
    assert!(e.to_string().contains("truncated.pth"), "{e}");

    let path = tmp("garbage.safetensors");
    std::fs::write(&path, b"definitely not weights")?;
    let e = Backbone::load(&path, Variant::Ikol24, &Device::Cpu).unwrap_err();
    assert!(
        matches!(e, Error::CheckpointUnreadable { .. })
            && e.to_string().contains("garbage.safetensors"),
        "{e}"
    );

    let e = Backbone::load(tmp("does-not-exist.pth"), Variant::Ikol24, &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("does-not-exist.pth"), "{e}");
    Ok(())
}

/// The fixture's tensors, to be edited and written back as safetensors without config metadata
/// (so the loader infers the architecture exactly as for a .pth).
fn fixture_tensors() -> Result<HashMap<String, Tensor>> {
    let ck = read_checkpoint(&data("ikol24_r34w2.pth"))?;
    // The smpl.* buffer and num_batches_tracked are in the file and ignored by the loader.
    assert!(ck.tensors.contains_key("smpl.v_template"));
    assert!(ck.tensors.contains_key("preact.bn1.num_batches_tracked"));
    Ok(ck.tensors)
}

fn write_plain(name: &str, t: &HashMap<String, Tensor>) -> Result<PathBuf> {
    let path = tmp(name);
    let st: HashMap<String, Tensor> = t.clone();
    candle_core::safetensors::save(&st, &path)?;
    Ok(path)
}

#[test]
fn key_and_shape_mismatches_are_all_listed() -> Result<()> {
    let mut t = fixture_tensors()?;
    t.remove("preact.layer2.0.downsample.1.running_var");
    t.remove("decphi.bias");
    let w = t.remove("fc2.weight").expect("fc2");
    t.insert("fc2.wieght".into(), w);
    t.insert(
        "decshape.bias".into(),
        Tensor::zeros(7, DType::F32, &Device::Cpu)?,
    );
    let path = write_plain("mismatched.safetensors", &t)?;
    let e = Backbone::load_with_input_size(&path, Variant::Ikol24, 64, &Device::Cpu).unwrap_err();
    let msg = e.to_string();
    match &e {
        Error::CheckpointMismatch {
            path: p,
            missing,
            unexpected,
            shape_mismatches,
            ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(
                missing,
                &vec![
                    "decphi.bias".to_string(),
                    "fc2.weight".to_string(),
                    "preact.layer2.0.downsample.1.running_var".to_string()
                ]
            );
            assert_eq!(unexpected, &vec!["fc2.wieght".to_string()]);
            assert_eq!(
                shape_mismatches,
                &vec![("decshape.bias".to_string(), vec![10], vec![7])]
            );
        }
        other => panic!("expected a mismatch error, got {other:?}"),
    }
    for needle in [
        "mismatched.safetensors",
        "decphi.bias",
        "fc2.wieght",
        "decshape.bias",
        "[10]",
        "[7]",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in: {msg}");
    }
    Ok(())
}

#[test]
fn non_finite_weights_are_refused_by_name() -> Result<()> {
    let mut t = fixture_tensors()?;
    let w = t.remove("fc1.weight").expect("fc1");
    let mut v = w.flatten_all()?.to_vec1::<f32>()?;
    v[3] = f32::NAN;
    t.insert(
        "fc1.weight".into(),
        Tensor::from_vec(v, w.shape(), &Device::Cpu)?,
    );
    let path = write_plain("nan.safetensors", &t)?;
    let e = Backbone::load_with_input_size(&path, Variant::Ikol24, 64, &Device::Cpu).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("nan.safetensors") && msg.contains("fc1.weight") && msg.contains("NaN"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn prefixed_keys_and_wrong_variant() -> Result<()> {
    // A DataParallel-style prefix is stripped for safetensors too.
    let t = fixture_tensors()?;
    let prefixed: HashMap<String, Tensor> = t
        .iter()
        .map(|(k, v)| (format!("module.{k}"), v.clone()))
        .collect();
    let path = write_plain("prefixed.safetensors", &prefixed)?;
    let net = Backbone::load_with_input_size(&path, Variant::Ikol24, 64, &Device::Cpu)?;
    assert_eq!(net.config().variant, Variant::Ikol24);

    // The IKOL-24 checkpoint is not a HybrIK-29 network: the error says which it fits.
    let e = Backbone::load(data("ikol24_r34w2.pth"), Variant::Hybrik29, &Device::Cpu).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("ikol24_r34w2.pth") && msg.contains("fits ikol24"),
        "{msg}"
    );

    // The HybrIK-29 checkpoint has no decleaf: loading it as IKOL-24 lists the missing leaf head
    // (its 29 x 4 = 116 heatmap channels are not a multiple of 24 either).
    let e = Backbone::load(data("hybrik29_r50w1.pth"), Variant::Ikol24, &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("hybrik29_r50w1.pth"), "{e}");
    Ok(())
}

#[test]
fn config_metadata_is_used() -> Result<()> {
    let t = fixture_tensors()?;
    let mut cfg = Config::tiny(Variant::Ikol24);
    cfg.resnet.width = 2;
    cfg.input_size = 96;
    let path = tmp("with_config.safetensors");
    save_safetensors(&path, &cfg, &t)?;
    let net = Backbone::load(&path, Variant::Ikol24, &Device::Cpu)?;
    assert_eq!(net.config().input_size, 96);
    // Saved files drop the ignored keys.
    let back = read_checkpoint(&path)?;
    assert!(!back.tensors.contains_key("smpl.v_template"));
    assert!(
        !back
            .tensors
            .keys()
            .any(|k| k.ends_with("num_batches_tracked"))
    );
    Ok(())
}
