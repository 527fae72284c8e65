//! Bad checkpoints give errors that name the file and the offending keys.
#![allow(clippy::unwrap_used)]

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

// ------------------------------------------------------------------------------------------------
// Hostile `.pth` files (issue 19): every one a clean error naming the file, no panic, no stack
// overflow, no allocation beyond what the file itself justifies.

/// A pickle integer: BININT for i32, else LONG1 with 8 little-endian bytes.
fn pk_int(v: i64) -> Vec<u8> {
    match i32::try_from(v) {
        Ok(i) => [&[b'J'][..], &i.to_le_bytes()].concat(),
        Err(_) => [&[0x8a, 8][..], &v.to_le_bytes()].concat(),
    }
}

fn pk_str(s: &str) -> Vec<u8> {
    [&[b'X'][..], &(s.len() as u32).to_le_bytes(), s.as_bytes()].concat()
}

/// `{"w": _rebuild_tensor_v2(storage('0', FloatStorage, numel), offset, size, stride, False,
/// OrderedDict())}` as torch.save pickles it (protocol 2).
fn state_dict_pickle(numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    let tuple = |v: &[i64]| {
        let mut b = vec![b'('];
        for &x in v {
            b.extend(pk_int(x));
        }
        b.push(b't');
        b
    };
    let mut p = b"\x80\x02}".to_vec();
    p.extend(pk_str("w"));
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.extend(b"(");
    p.extend(pk_str("storage"));
    p.extend(b"ctorch\nFloatStorage\n");
    p.extend(pk_str("0"));
    p.extend(pk_str("cpu"));
    p.extend(pk_int(numel));
    p.extend(b"tQ");
    p.extend(pk_int(offset));
    p.extend(tuple(size));
    p.extend(tuple(stride));
    p.extend(b"\x89ccollections\nOrderedDict\n)RtRs.");
    p
}

/// A torch-style zip: `archive/data.pkl` and `archive/data/0` (deflated when asked).
fn pth(name: &str, pickle: &[u8], storage: &[u8], deflate: bool) -> PathBuf {
    use std::io::Write;
    let path = tmp(name);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", stored).unwrap();
    z.write_all(pickle).unwrap();
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    z.start_file(
        "archive/data/0",
        zip::write::SimpleFileOptions::default().compression_method(method),
    )
    .unwrap();
    z.write_all(storage).unwrap();
    z.finish().unwrap();
    path
}

fn floats(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn pth_views_are_read_as_torch_lays_them_out() {
    let store = floats(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let read = |offset, size: &[i64], stride: &[i64]| {
        let p = pth(
            "view.pth",
            &state_dict_pickle(6, offset, size, stride),
            &store,
            false,
        );
        ikol_backbone::pth::read_pth(&p, &[]).unwrap().remove(0).1
    };
    let t = read(1, &[2], &[1]);
    assert_eq!((t.shape.clone(), t.data), (vec![2], floats(&[2.0, 3.0])));
    // A strided view and a transposed 2x3 -> 3x2 (column-major) view, gathered to C order.
    assert_eq!(read(0, &[3], &[2]).data, floats(&[1.0, 3.0, 5.0]));
    let t = read(0, &[3, 2], &[1, 3]);
    assert_eq!(t.data, floats(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
}

#[test]
fn hostile_pth_files_are_refused_cleanly() {
    let store = floats(&[1.0, 2.0, 3.0, 4.0]);
    let refuse = |name: &str, pickle: Vec<u8>, storage: &[u8], deflate: bool, expect: &str| {
        let path = pth(name, &pickle, storage, deflate);
        let msg = match read_checkpoint(&path) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{name}: accepted"),
        };
        assert!(msg.contains(name) && msg.contains(expect), "{name}: {msg}");
    };
    // Storage offsets: negative, at the end of u63 (overflow), far beyond the storage.
    refuse(
        "off_neg.pth",
        state_dict_pickle(4, -1, &[2], &[1]),
        &store,
        false,
        "negative",
    );
    refuse(
        "off_max.pth",
        state_dict_pickle(4, i64::MAX, &[2], &[1]),
        &store,
        false,
        "reaches element",
    );
    refuse(
        "stride_max.pth",
        state_dict_pickle(4, 2, &[3], &[i64::MAX]),
        &store,
        false,
        "overflows",
    );
    refuse(
        "off_2e62.pth",
        state_dict_pickle(4, 1 << 62, &[2], &[1]),
        &store,
        false,
        "reaches element",
    );
    // Sizes and strides that reach past the storage; a negative size.
    refuse(
        "stride.pth",
        state_dict_pickle(4, 0, &[2, 2], &[1, 3]),
        &store,
        false,
        "reaches element",
    );
    refuse(
        "size_neg.pth",
        state_dict_pickle(4, 0, &[-2], &[1]),
        &store,
        false,
        "negative size",
    );
    // The persistent id claims more elements than the entry holds (and 4 GiB: no allocation).
    refuse(
        "short.pth",
        state_dict_pickle(8, 0, &[2], &[1]),
        &store,
        false,
        "the checkpoint says 32",
    );
    refuse(
        "claim4g.pth",
        state_dict_pickle(1 << 30, 0, &[2], &[1]),
        &store,
        false,
        "the checkpoint says",
    );
    // A deflate bomb: 64 MiB of zeros in about 64 KiB, declared consistently: refused by ratio
    // before anything is inflated.
    let zeros = vec![0u8; 64 << 20];
    refuse(
        "bomb.pth",
        state_dict_pickle(16 << 20, 0, &[2], &[1]),
        &zeros,
        true,
        "zip bomb",
    );
    // A 10^6-deep nested tuple, a memo index of 2^32-1, a 4 GiB length field.
    let mut deep = b"\x80\x02)".to_vec();
    deep.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    deep.push(b'.');
    refuse("deep.pth", deep, &store, false, "data.pkl");
    refuse(
        "memo.pth",
        b"\x80\x02}r\xff\xff\xff\xff.".to_vec(),
        &store,
        false,
        "no tensors",
    );
    refuse(
        "len4g.pth",
        b"\x80\x02X\xff\xff\xff\xffab.".to_vec(),
        &store,
        false,
        "truncated pickle",
    );
    // A storage key that tries to leave the archive; an unknown storage type.
    let evil = state_dict_pickle(4, 0, &[2], &[1]);
    let key = pk_str("0");
    let pos = evil
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .unwrap();
    let evil = [&evil[..pos], &pk_str("../0")[..], &evil[pos + key.len()..]].concat();
    refuse("key.pth", evil, &store, false, "not a plain name");
    let mut odd = state_dict_pickle(4, 0, &[2], &[1]);
    let at = odd.windows(5).position(|w| w == b"Float").unwrap();
    odd[at..at + 5].copy_from_slice(b"Quant");
    refuse(
        "qstorage.pth",
        odd,
        &store,
        false,
        "unsupported storage type QuantStorage",
    );
}
