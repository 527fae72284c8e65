//! File readers of ikol-body: SMPL `.pkl` / `.npz` models, `.npy`, and 3DPW-like pickles.
//!
//! Fixtures in tests/data/body/ are written by (from the repository root):
//!     /root/.cache/ikol/pyenv/bin/python tests/data/body/gen_body_fixtures.py
//! (pins at the top of that script: numpy 2.4.6, scipy 1.17.1, torch 2.15.0, smplx 0.1.28,
//! chumpy 0.70). The literal numbers below are what that script prints.

use std::path::{Path, PathBuf};

use ikol_body::npy::{DType, NdArray, read_npy_file, read_npz, write_npz};
use ikol_body::pickle::{Value, read_pickle_file};
use ikol_body::smpl_file::{self, LoadOptions, SmplArrays, SmplFileFormat};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/body")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ikol-body-readers");
    std::fs::create_dir_all(&dir).expect("create the test temp dir");
    dir.join(name)
}

fn npy_f64(name: &str) -> Vec<f64> {
    read_npy_file(data(name))
        .and_then(|a| a.to_f64())
        .expect("read a reference .npy")
}

/// Everything but the layout-dependent fields (format, strings, warnings).
fn same_arrays(a: &SmplArrays, b: &SmplArrays) {
    assert_eq!(
        (a.num_vertices, a.num_joints, a.num_betas),
        (b.num_vertices, b.num_joints, b.num_betas)
    );
    assert_eq!(a.v_template, b.v_template);
    assert_eq!(a.shapedirs, b.shapedirs);
    assert_eq!(a.posedirs, b.posedirs);
    assert_eq!(a.j_regressor, b.j_regressor);
    assert_eq!(a.joints_template, b.joints_template);
    assert_eq!(a.weights, b.weights);
    assert_eq!(a.parents, b.parents);
    assert_eq!(a.faces, b.faces);
}

const SMPL_PARENTS: [i64; 24] = [
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
];

#[test]
fn npz_py2_pkl_and_py3_pkl_load_identical_arrays() {
    let npz = smpl_file::load(data("random_smpl.npz")).unwrap();
    let pkl = smpl_file::load(data("random_smpl.pkl")).unwrap();
    let py3 = smpl_file::load(data("random_smpl_py3.pkl")).unwrap();
    assert_eq!(npz.format, SmplFileFormat::Npz);
    assert_eq!(pkl.format, SmplFileFormat::Pickle);
    same_arrays(&npz, &pkl);
    same_arrays(&npz, &py3);
    for m in [&npz, &pkl, &py3] {
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }
    assert_eq!(pkl.bs_style.as_deref(), Some("lbs"));
    assert_eq!(pkl.bs_type.as_deref(), Some("lrotmin"));
    assert_eq!(py3.bs_type.as_deref(), Some("lrotmin"));
    assert_eq!(npz.bs_style, None);
}

#[test]
fn values_match_python() {
    let m = smpl_file::load(data("random_smpl.pkl")).unwrap();
    assert_eq!(
        (m.num_vertices, m.num_joints, m.num_betas, m.num_faces()),
        (32, 24, 10, 40)
    );
    assert_eq!(m.parents, SMPL_PARENTS);
    // whole arrays against numpy's own .npy files
    assert_eq!(m.v_template, npy_f64("random_expected_v_template.npy"));
    assert_eq!(m.shapedirs, npy_f64("random_expected_shapedirs.npy"));
    assert_eq!(m.weights, npy_f64("random_expected_weights.npy"));
    assert_eq!(
        m.j_regressor.to_dense(),
        npy_f64("random_expected_j_regressor.npy")
    );
    let faces = read_npy_file(data("random_expected_faces.npy"))
        .unwrap()
        .to_i64()
        .unwrap();
    assert_eq!(
        m.faces.iter().map(|&f| i64::from(f)).collect::<Vec<_>>(),
        faces
    );
    // and single values printed by the generator
    assert_eq!(
        m.v_template[..3],
        [
            -0.0633567361671874,
            -0.15532004129535765,
            0.044878751088738685
        ]
    );
    assert_eq!(m.v_template[31 * 3 + 2], 0.26337293702952036);
    let b = m.num_betas;
    assert_eq!(m.shapedirs[(5 * 3 + 1) * b + 3], -0.0032778338846089117);
    let posedirs = m.posedirs.as_ref().unwrap();
    assert_eq!(posedirs.len(), 32 * 3 * 207);
    assert_eq!(posedirs[(7 * 3 + 2) * 207 + 100], -0.0017754079277818489);
    assert_eq!(m.j_regressor.data.len(), 96);
    assert_eq!(
        m.j_regressor.row(3).collect::<Vec<_>>(),
        vec![
            (4, 0.12205290061909517),
            (6, 0.09931364132054459),
            (17, 0.7271419923461759),
            (25, 0.0514914657141842)
        ]
    );
    let w10: Vec<(usize, f64)> = (0..24)
        .map(|j| (j, m.weights[10 * 24 + j]))
        .filter(|&(_, w)| w != 0.0)
        .collect();
    assert_eq!(
        w10,
        vec![
            (9, 0.3865019455752219),
            (16, 0.06814902278690277),
            (19, 0.5453490316378753)
        ]
    );
    assert_eq!(m.faces[..3], [25, 19, 7]);
    assert_eq!(m.faces[39 * 3..], [1, 4, 21]);
    // the file's rest joints are J_regressor . v_template (written that way by the generator)
    let j = m.joints_template.as_ref().unwrap();
    let regressed = m.j_regressor.mul_dense(&m.v_template, 3);
    for (a, b) in j.iter().zip(&regressed) {
        assert!((a - b).abs() < 1e-15, "{a} vs {b}");
    }
    let w = m.weights_csr();
    assert_eq!((w.rows, w.cols), (32, 24));
    assert_eq!(w.to_dense(), m.weights);
}

#[test]
fn betas_300_are_sliced_with_a_warning() {
    let full = smpl_file::load(data("random_smpl_300.pkl")).unwrap();
    assert_eq!(full.num_betas, 300);
    assert_eq!(full.shapedirs[299], 0.0324660593337737); // shapedirs[0, 0, 299]
    assert!(full.posedirs.is_none());
    assert!(full.warnings.is_empty());

    let opts = LoadOptions {
        max_betas: Some(10),
        ..LoadOptions::default()
    };
    let sliced = smpl_file::load_with(data("random_smpl_300.pkl"), &opts).unwrap();
    assert_eq!(sliced.num_betas, 10);
    assert_eq!(sliced.warnings.len(), 1);
    let w = &sliced.warnings[0];
    assert!(
        w.contains("random_smpl_300.pkl") && w.contains("300") && w.contains("first 10"),
        "{w}"
    );
    // the first 10 components are the 10-beta model's
    let base = smpl_file::load(data("random_smpl.pkl")).unwrap();
    assert_eq!(sliced.shapedirs, base.shapedirs);
    assert_eq!(sliced.v_template, base.v_template);
    // max_betas above the file's count changes nothing
    let opts = LoadOptions {
        max_betas: Some(16),
        ..LoadOptions::default()
    };
    let same = smpl_file::load_with(data("random_smpl.pkl"), &opts).unwrap();
    assert_eq!(same.num_betas, 10);
    assert!(same.warnings.is_empty());
}

#[test]
fn truncated_files_are_errors_naming_the_file() {
    for name in ["random_smpl.pkl", "random_smpl_py3.pkl", "random_smpl.npz"] {
        let bytes = std::fs::read(data(name)).unwrap();
        let n = bytes.len();
        for cut in [
            0,
            1,
            2,
            3,
            10,
            100,
            1000,
            n / 3,
            n / 2,
            n - 100,
            n - 2,
            n - 1,
        ] {
            let path = Path::new(name);
            let err = smpl_file::from_bytes(&bytes[..cut], path, &LoadOptions::default())
                .expect_err("a truncated file must not load");
            let msg = err.to_string();
            assert!(msg.starts_with(name), "{name} cut at {cut}: {msg}");
            if name.ends_with(".pkl") && cut >= 2 {
                assert!(
                    msg.contains("truncated pickle"),
                    "{name} cut at {cut}: {msg}"
                );
            }
            if name.ends_with(".npz") && cut >= 4 {
                assert!(msg.contains("npz"), "{name} cut at {cut}: {msg}");
            }
        }
        // through a real file too
        let path = tmp(&format!("cut_{name}"));
        std::fs::write(&path, &bytes[..n / 2]).unwrap();
        let msg = smpl_file::load(&path).unwrap_err().to_string();
        assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
    }
    let msg = smpl_file::load(tmp("does_not_exist.pkl"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("does_not_exist.pkl"), "{msg}");
    let msg = smpl_file::from_bytes(b"hello", Path::new("model.bin"), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("model.bin") && msg.contains("not an SMPL"),
        "{msg}"
    );
}

#[test]
fn pkl_missing_weights_and_unsupported_opcode() {
    let bytes = std::fs::read(data("random_smpl.pkl")).unwrap();
    // rename the key `weights` (SHORT_BINSTRING, 7 bytes) to `weightz`
    let at = bytes.windows(9).position(|w| w == b"U\x07weights").unwrap();
    let mut renamed = bytes.clone();
    renamed[at + 8] = b'z';
    let err = smpl_file::from_bytes(
        &renamed,
        Path::new("no_weights.pkl"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "no_weights.pkl: missing key `weights`");

    // opcode 0x97 (NEXT_BUFFER, protocol-5 out-of-band data) in place of the top EMPTY_DICT
    let mut bad = bytes.clone();
    assert_eq!(&bad[..4], b"\x80\x02}q");
    bad[2] = 0x97;
    let msg = smpl_file::from_bytes(&bad, Path::new("oob.pkl"), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("oob.pkl: ") && msg.contains("NEXT_BUFFER (0x97) at byte 2"),
        "{msg}"
    );
    let mut bad = bytes;
    bad[2] = 0xfe;
    let msg = smpl_file::from_bytes(&bad, Path::new("x.pkl"), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("unsupported pickle opcode unknown (0xfe) at byte 2"),
        "{msg}"
    );
}

/// Writes `random_smpl.npz` with one entry replaced (or removed) and returns the load error text.
fn variant(name: &str, key: &str, replace: Option<NdArray>) -> String {
    let mut m = read_npz(data("random_smpl.npz")).expect("read random_smpl.npz");
    match replace {
        Some(a) => m.insert(key.to_owned(), a),
        None => m.remove(key),
    };
    let path = tmp(name);
    write_npz(&path, m.iter().map(|(k, v)| (k.as_str(), v))).expect("write the variant");
    let msg = smpl_file::load(&path)
        .expect_err("the variant must not load")
        .to_string();
    assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
    msg
}

#[test]
fn bad_npz_variants_name_key_and_problem() {
    let good = read_npz(data("random_smpl.npz")).unwrap();
    let f64s = |k: &str| good[k].to_f64().unwrap();

    // our writer's output loads like numpy's
    let path = tmp("rewritten.npz");
    write_npz(&path, good.iter().map(|(k, v)| (k.as_str(), v))).unwrap();
    same_arrays(
        &smpl_file::load(&path).unwrap(),
        &smpl_file::load(data("random_smpl.npz")).unwrap(),
    );

    let msg = variant("no_weights.npz", "weights", None);
    assert!(msg.ends_with("missing key `weights`"), "{msg}");
    let msg = variant("no_faces.npz", "f", None);
    assert!(msg.ends_with("missing key `f`"), "{msg}");

    let sd = NdArray::from_f64(&[32, 30], &f64s("shapedirs")[..32 * 30]).unwrap();
    let msg = variant("shapedirs_2d.npz", "shapedirs", Some(sd));
    assert!(
        msg.contains("key `shapedirs`") && msg.contains("expected [V=32, 3, B]"),
        "{msg}"
    );

    let w: Vec<f64> = f64s("weights")
        .chunks(24)
        .flat_map(|r| r[..23].to_vec())
        .collect();
    let msg = variant(
        "weights_23.npz",
        "weights",
        Some(NdArray::from_f64(&[32, 23], &w).unwrap()),
    );
    assert!(
        msg.contains("key `weights`") && msg.contains("[32, 23], expected [V=32, J=24]"),
        "{msg}"
    );

    let mut f: Vec<i32> = good["f"]
        .to_i64()
        .unwrap()
        .iter()
        .map(|&x| x as i32)
        .collect();
    f[3 * 7 + 1] = 32;
    let msg = variant(
        "face_oob.npz",
        "f",
        Some(NdArray::from_i32(&[40, 3], &f).unwrap()),
    );
    assert!(
        msg.contains("key `f`")
            && msg.contains("face 7 uses vertex index 32, but the model has 32 vertices"),
        "{msg}"
    );

    let mut vt = f64s("v_template");
    vt[2 * 3 + 1] = f64::NAN;
    let msg = variant(
        "nan_vt.npz",
        "v_template",
        Some(NdArray::from_f64(&[32, 3], &vt).unwrap()),
    );
    assert!(
        msg.contains("key `v_template`") && msg.contains("[2, 1] is NaN"),
        "{msg}"
    );

    let mut pd = f64s("posedirs");
    pd[5] = f64::INFINITY;
    let msg = variant(
        "inf_pd.npz",
        "posedirs",
        Some(NdArray::from_f64(&[32, 3, 207], &pd).unwrap()),
    );
    assert!(
        msg.contains("key `posedirs`") && msg.contains("[0, 0, 5] is inf"),
        "{msg}"
    );

    let pd = NdArray::from_f64(&[32, 3, 200], &f64s("posedirs")[..32 * 3 * 200]).unwrap();
    let msg = variant("pd_200.npz", "posedirs", Some(pd));
    assert!(msg.contains("expected [V=32, 3, 9*(J-1)=207]"), "{msg}");

    let jr = NdArray::from_f64(&[24, 31], &f64s("J_regressor")[..24 * 31]).unwrap();
    let msg = variant("jreg.npz", "J_regressor", Some(jr));
    assert!(
        msg.contains("key `J_regressor`") && msg.contains("[24, 31], expected [J=24, V=32]"),
        "{msg}"
    );

    let mut kt: Vec<i64> = good["kintree_table"].to_i64().unwrap();
    kt[5] = 7; // joint 5's parent becomes joint 7
    let msg = variant(
        "kintree.npz",
        "kintree_table",
        Some(NdArray::from_i64(&[2, 24], &kt).unwrap()),
    );
    assert!(
        msg.contains("joint 5 has parent 7; parents must precede their children"),
        "{msg}"
    );

    let kt = NdArray::from_i64(&[2, 23], &good["kintree_table"].to_i64().unwrap()[..46]).unwrap();
    let msg = variant("kintree23.npz", "kintree_table", Some(kt));
    assert!(
        msg.contains("the model has 23 joints, expected 24"),
        "{msg}"
    );

    let strings = NdArray::new(vec![1], DType::U8, false, vec![0]).unwrap();
    let float_faces = NdArray::from_f64(&[1, 3], &[0.0, 1.0, 2.0]).unwrap();
    let msg = variant("float_faces.npz", "f", Some(float_faces));
    assert!(
        msg.contains("key `f`") && msg.contains("float array where integers"),
        "{msg}"
    );
    let msg = variant("u8_vt.npz", "v_template", Some(strings));
    assert!(
        msg.contains("key `v_template`") && msg.contains("expected [V, 3]"),
        "{msg}"
    );
}

#[test]
fn string_members_as_numpy_writes_them() {
    // python3 -c "import numpy as np, io; b = io.BytesIO(); np.save(b, np.array('neutral'));
    //             print(b.getvalue())"
    // -> header {'descr': '<U7', 'fortran_order': False, 'shape': (), } then 7 UTF-32LE chars
    let mut npy = b"\x93NUMPY\x01\x00v\x00".to_vec();
    npy.extend_from_slice(b"{'descr': '<U7', 'fortran_order': False, 'shape': (), }");
    npy.resize(127, b' ');
    npy.push(b'\n');
    for c in "neutral".chars() {
        npy.extend_from_slice(&u32::from(c).to_le_bytes());
    }
    let a = ikol_body::npy::read_npy(&npy).unwrap();
    assert_eq!(a.to_strings().unwrap(), vec!["neutral".to_owned()]);
    assert!(a.to_f64().is_err(), "strings are not numbers");
    // Our writer gives numpy's bytes exactly.
    let ours = ikol_body::npy::npy_bytes(&NdArray::from_str_scalar("neutral").unwrap()).unwrap();
    assert_eq!(ours, npy);
}

#[test]
fn unreadable_npz_member_names_the_key() {
    // a big-endian string array member ('>U3', which this reader does not parse; '<U3' it
    // does) breaks only its own key
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let dict = b"{'descr': '>U3', 'fortran_order': False, 'shape': (), }";
    let total = (10 + dict.len() + 1).div_ceil(64) * 64;
    npy.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    npy.extend_from_slice(dict);
    npy.resize(total - 1, b' ');
    npy.push(b'\n');
    npy.extend_from_slice(&[0, 0, 0, b'l', 0, 0, 0, b'b', 0, 0, 0, b's']);
    let good = read_npz(data("random_smpl.npz")).unwrap();
    let path = tmp("with_string.npz");
    {
        use std::io::Write;
        let mut zw = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (k, v) in &good {
            zw.start_file(format!("{k}.npy"), opts).unwrap();
            zw.write_all(&ikol_body::npy::npy_bytes(v).unwrap())
                .unwrap();
        }
        zw.start_file("bs_style.npy", opts).unwrap();
        zw.write_all(&npy).unwrap();
        zw.finish().unwrap();
    }
    // unused string member: loads
    let m = smpl_file::load(&path).unwrap();
    assert_eq!(m.num_vertices, 32);
    // the strict reader refuses the archive, naming the member and dtype
    let msg = read_npz(&path).unwrap_err().to_string();
    assert!(
        msg.contains("bs_style.npy") && msg.contains("unsupported dtype '>U3'"),
        "{msg}"
    );
}

#[test]
fn pw3d_like_pickles_py2_and_py3() {
    for name in ["pw3d_like_py2.pkl", "pw3d_like_py3.pkl"] {
        let v = read_pickle_file(data(name)).unwrap();
        // latin-1 text: py2 str (bytes) in one file, str in the other
        assert_eq!(
            v.get("sequence").unwrap().as_str().unwrap(),
            "downtown_caf\u{e9}_00"
        );
        let genders: Vec<String> = v
            .get("genders")
            .unwrap()
            .as_list()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().into_owned())
            .collect();
        assert_eq!(genders, ["m", "f"]);
        if name.contains("py2") {
            assert!(matches!(v.get("sequence"), Some(Value::Bytes(_))));
        }

        let poses = v.get("poses").unwrap().as_list().unwrap();
        assert_eq!(poses.len(), 2);
        for (p, pose) in poses.iter().enumerate() {
            let a = pose.as_array().unwrap();
            assert_eq!(
                (a.dtype, a.shape.as_slice()),
                (DType::F64, &[5usize, 72][..])
            );
            // p + 0.001 * np.arange(360).reshape(5, 72)
            let want: Vec<f64> = (0..360).map(|k| p as f64 + 0.001 * k as f64).collect();
            assert_eq!(a.to_f64().unwrap(), want, "{name} poses[{p}]");
        }
        let betas = v.get("betas").unwrap().as_list().unwrap();
        let b1 = betas[1].as_array().unwrap().to_f64().unwrap();
        assert_eq!(b1.len(), 10);
        assert_eq!((b1[0], b1[9]), (-2.0, 2.0)); // np.linspace(-1, 1, 10) * 2

        let ids = v.get("img_frame_ids").unwrap().as_array().unwrap();
        assert_eq!(
            (ids.dtype, ids.shape.as_slice()),
            (DType::I64, &[5usize][..])
        );
        assert_eq!(ids.to_i64().unwrap(), vec![0, 2, 4, 6, 8]);

        let valid = v.get("campose_valid").unwrap().as_list().unwrap();
        let valid: Vec<Vec<bool>> = valid
            .iter()
            .map(|x| {
                let a = x.as_array().unwrap();
                assert_eq!(a.dtype, DType::Bool);
                a.to_bool().unwrap()
            })
            .collect();
        assert_eq!(
            valid,
            vec![
                vec![true, true, false, true, true],
                vec![false, true, true, true, false]
            ]
        );

        let k = v.get("cam_intrinsics").unwrap().as_array().unwrap();
        assert_eq!(k.shape, vec![3, 3]);
        assert_eq!(
            k.to_f64().unwrap(),
            vec![1961.8, 0.0, 540.0, 0.0, 1969.2, 960.0, 0.0, 0.0, 1.0]
        );
        let cam = v.get("cam_poses").unwrap().as_array().unwrap();
        assert_eq!(cam.shape, vec![5, 4, 4]);
        let trans = v.get("trans").unwrap().as_list().unwrap();
        assert_eq!(
            trans[1].as_array().unwrap().to_f64().unwrap(),
            vec![0.5; 15]
        );
    }
    // truncations of the hand-assembled py2 file are errors, never panics
    let bytes = std::fs::read(data("pw3d_like_py2.pkl")).unwrap();
    for cut in (0..bytes.len()).step_by(7) {
        assert!(ikol_body::pickle::read_pickle(&bytes[..cut]).is_err());
    }
}

#[test]
fn lbs_reference_fixtures_are_consistent() {
    // smplx.lbs.lbs outputs on random_smpl (used by the LBS tests of this crate)
    let shape = |n: &str| read_npy_file(data(n)).unwrap().shape;
    assert_eq!(shape("random_lbs_betas.npy"), vec![3, 10]);
    assert_eq!(shape("random_lbs_pose.npy"), vec![3, 72]);
    assert_eq!(shape("random_lbs_verts.npy"), vec![3, 32, 3]);
    assert_eq!(shape("random_lbs_joints.npy"), vec![3, 24, 3]);
    // the same on the embedded models (computed from their f32 values in float64; the default
    // model keeps every 7th vertex, listed in *_vert_idx.npy). Regenerate after rebuilding them.
    for (tag, nv, stride) in [("small", 1229usize, 1usize), ("default", 12272, 7)] {
        let kept = nv.div_ceil(stride);
        assert_eq!(shape(&format!("{tag}_lbs_betas.npy")), vec![3, 10]);
        assert_eq!(shape(&format!("{tag}_lbs_pose.npy")), vec![3, 72]);
        assert_eq!(shape(&format!("{tag}_lbs_verts.npy")), vec![3, kept, 3]);
        assert_eq!(shape(&format!("{tag}_lbs_joints.npy")), vec![3, 24, 3]);
        let idx = read_npy_file(data(&format!("{tag}_lbs_vert_idx.npy")))
            .unwrap()
            .to_i64()
            .unwrap();
        assert_eq!(idx, (0..nv as i64).step_by(stride).collect::<Vec<_>>());
    }
    let verts = npy_f64("random_lbs_verts.npy");
    assert_eq!(
        verts[(32 + 4) * 3..(32 + 4) * 3 + 3],
        [
            0.046742646224003495,
            -0.5575621773946766,
            -0.09197168657198032
        ]
    );
}

#[test]
fn npz_leaf_vertex_ids_for_models_that_are_not_smpl() {
    // A 32-vertex model (not SMPL's 6890): without the key no leaves, with it these.
    let mut m = read_npz(data("random_smpl.npz")).unwrap();
    let plain = tmp("leafless.npz");
    write_npz(&plain, m.iter().map(|(k, v)| (k.as_str(), v))).unwrap();
    assert_eq!(
        ikol_body::BodyModel::from_spec(plain.to_str().unwrap())
            .unwrap()
            .leaf_vertices,
        None
    );
    m.insert(
        "leaf_vertex_ids".into(),
        NdArray::from_i64(&[5], &[31, 4, 9, 17, 0]).unwrap(),
    );
    let path = tmp("leaves.npz");
    write_npz(&path, m.iter().map(|(k, v)| (k.as_str(), v))).unwrap();
    let model = ikol_body::BodyModel::from_spec(path.to_str().unwrap()).unwrap();
    assert_eq!(model.leaf_vertices, Some([31, 4, 9, 17, 0]));
    // 29-joint targets need the leaves: the rest skeleton has them now.
    assert_eq!(model.rest_joints29(&[0.0; 10]).unwrap().len(), 29);
    let msg = variant(
        "leaf_out_of_range.npz",
        "leaf_vertex_ids",
        Some(NdArray::from_i64(&[5], &[1, 2, 3, 4, 32]).unwrap()),
    );
    assert!(
        msg.contains("leaf_vertex_ids") && msg.contains("outside 0..32"),
        "{msg}"
    );
    let msg = variant(
        "leaf_four.npz",
        "leaf_vertex_ids",
        Some(NdArray::from_i64(&[4], &[1, 2, 3, 4]).unwrap()),
    );
    assert!(msg.contains("expected [5]"), "{msg}");
}

/// Finite but absurd numbers are refused at the boundary, naming the key (issue 19: a
/// J_regressor entry of 3e38 gave vertices 2e38 m away, with exit 0).
#[test]
fn physically_absurd_models_are_refused() {
    let good = read_npz(data("random_smpl.npz")).unwrap();
    let scaled = |k: &str, i: usize, v: f64| {
        let mut a = good[k].to_f64().unwrap();
        a[i] = v;
        NdArray::from_f64(&good[k].shape, &a).unwrap()
    };
    let load = |name: &str, key: &str, arr: NdArray| {
        let mut m = good.clone();
        m.insert(key.to_owned(), arr);
        let path = tmp(name);
        write_npz(&path, m.iter().map(|(k, v)| (k.as_str(), v))).unwrap();
        ikol_body::BodyModel::from_spec(path.to_str().unwrap())
            .expect_err("must not load")
            .to_string()
    };
    let msg = load(
        "jreg3e38.npz",
        "J_regressor",
        scaled("J_regressor", 5, 3e38),
    );
    assert!(
        msg.contains("J_regressor") && msg.contains("not within"),
        "{msg}"
    );
    // A row that no longer sums to 1.
    let msg = load("jreg_sum.npz", "J_regressor", scaled("J_regressor", 0, 0.5));
    assert!(
        msg.contains("J_regressor") && msg.contains("not 1"),
        "{msg}"
    );
    let msg = load("vt100.npz", "v_template", scaled("v_template", 7, 100.0));
    assert!(
        msg.contains("v_template") && msg.contains("beyond the 10 m"),
        "{msg}"
    );
    let msg = load("sd5.npz", "shapedirs", scaled("shapedirs", 3, 5.0));
    assert!(msg.contains("shapedirs"), "{msg}");
    // Weights of one vertex 2 and -1 (still summing to 1).
    let mut w = good["weights"].to_f64().unwrap();
    w[..24].fill(0.0);
    w[0] = 2.0;
    w[1] = -1.0;
    let msg = load(
        "w2.npz",
        "weights",
        NdArray::from_f64(&[32, 24], &w).unwrap(),
    );
    assert!(
        msg.contains("weights") && msg.contains("outside [0, 1]"),
        "{msg}"
    );
}

/// A deflate bomb in an `.npz` (issue 19: 5.25 GB RSS before its error): a member that
/// declares more than the cap is refused unread, one that under-declares stops at its declared
/// size.
#[test]
fn npz_bombs_are_refused_without_inflating() {
    use std::io::Write;
    let path = tmp("bomb.npz");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        z.start_file("big.npy", opts).unwrap();
        z.write_all(&vec![0u8; 16 << 20]).unwrap();
        z.finish().unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    // Patch the uncompressed size in the local header (offset 22) and the central directory
    // entry (offset 24 after its signature).
    let patched = |size: u32| {
        let mut b = bytes.clone();
        b[22..26].copy_from_slice(&size.to_le_bytes());
        let cd = b.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
        b[cd + 24..cd + 28].copy_from_slice(&size.to_le_bytes());
        b
    };
    let small = ikol_body::npy::read_npz_bytes(&patched(1000))
        .unwrap_err()
        .to_string();
    // (the zip reader itself stops at the declared size, as our cap does)
    assert!(
        small.contains("big.npy") && (small.contains("declares") || small.contains("declared")),
        "{small}"
    );
    let huge = ikol_body::npy::read_npz_bytes(&patched(3 << 30))
        .unwrap_err()
        .to_string();
    assert!(
        huge.contains("big.npy") && huge.contains("more than"),
        "{huge}"
    );
}
