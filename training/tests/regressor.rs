//! Body regressors (HKMR, flat HMR/SPIN) in the training loop: forward kinematics on tensors
//! against ikol-body's, overfitting, exact resume, checkpoints the element's loader reads.

use candle_core::{DType, Device, Tensor};
use ikol_backbone::{DirectRegressor, RotationRepr};
use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_train::config::{DataConfig, ModelChoice, TrainConfig};
use ikol_train::loss::posed_joints;
use ikol_train::train::Trainer;
use ikol_types::joints::{SMPL_JOINTS, SMPL24_PARENTS};
use ikol_types::rotation::axis_angle_to_matrix;

fn config(model: ModelChoice, out: &str) -> TrainConfig {
    let mut c = TrainConfig {
        model,
        data: DataConfig::Synthetic { count: 8, seed: 3 },
        batch_size: 8,
        steps: 10,
        eval_every: 0,
        eval_count: 0,
        checkpoint_every: 0,
        seed: 11,
        out_dir: std::env::temp_dir().join(format!("ikol-train-{out}-{}", std::process::id())),
        ..TrainConfig::default()
    };
    c.regressor.hidden = 32;
    c.regressor.outer = 2;
    c.regressor.inner = 1;
    c.optim.lr = 3e-3;
    c
}

/// A heatmap network's output that is the batch's labels (uvd, twist, shape, leaves): a
/// perfect prediction.
fn labels_as_output(batch: &ikol_train::data::Batch) -> anyhow::Result<ikol_backbone::NetOutput> {
    Ok(ikol_backbone::NetOutput {
        uvd: batch.uvd.clone(),
        phi: batch.twist.clone(),
        beta: batch.beta.clone(),
        delta_beta: batch.beta.zeros_like()?,
        leaf: Some(batch.leaf.clone()),
    })
}

#[test]
fn tensor_forward_kinematics_matches_ikol_body() -> anyhow::Result<()> {
    let rest: Vec<Vector3<f64>> = (0..SMPL_JOINTS)
        .map(|j| {
            Vector3::new(
                0.1 * j as f64,
                (j as f64 * 0.7).sin(),
                0.05 * (j % 5) as f64,
            )
        })
        .collect();
    let local: Vec<Matrix3<f64>> = (0..SMPL_JOINTS)
        .map(|j| {
            let t = j as f64;
            axis_angle_to_matrix(&Vector3::new(
                (t * 1.3).sin(),
                (t * 0.4).cos(),
                0.3 - 0.05 * t,
            ))
        })
        .collect();
    let (_, expect) = ikol_body::forward_kinematics(&local, &rest, &SMPL24_PARENTS);
    let rot: Vec<f64> = local
        .iter()
        .flat_map(|m| (0..9).map(move |k| m[(k / 3, k % 3)]))
        .collect();
    let rest_t: Vec<f64> = rest.iter().flat_map(|p| [p.x, p.y, p.z]).collect();
    let got = posed_joints(
        &Tensor::from_vec(rot, (1, SMPL_JOINTS, 3, 3), &Device::Cpu)?,
        &Tensor::from_vec(rest_t, (1, SMPL_JOINTS, 3), &Device::Cpu)?,
    )?
    .squeeze(0)?
    .to_vec2::<f64>()?;
    for (g, e) in got.iter().zip(&expect) {
        let e = e - expect[0];
        for c in 0..3 {
            assert!((g[c] - e[c]).abs() < 1e-12, "{g:?} vs {e:?}");
        }
    }
    Ok(())
}

/// Each regressor on 8 synthetic samples: the loss falls 5x and the held-in MPJPE with it (the
/// flat one also in SPIN's 6D rotations).
#[test]
fn hkmr_and_flat_regressors_fit_eight_samples() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    for (model, rotation) in [
        (ModelChoice::Hkmr, RotationRepr::AxisAngle),
        (ModelChoice::Flat, RotationRepr::AxisAngle),
        (ModelChoice::Flat, RotationRepr::SixD),
    ] {
        let mut cfg = config(model, "fit");
        cfg.regressor.rotation = rotation;
        cfg.eval_count = 8;
        cfg.eval_seed = 3; // the training samples themselves
        cfg.eval_every = 1;
        let mut tr = Trainer::new(cfg, &dev)?;
        let before = tr.evaluate()?.expect("evaluation on");
        let first = tr.train_step()?;
        let mut best = first.losses.total;
        let mut steps = 1;
        while steps < 300 && best > first.losses.total / 5.0 {
            let r = tr.train_step()?;
            assert!(!r.skipped);
            best = best.min(r.losses.total);
            steps += 1;
        }
        let after = tr.evaluate()?.expect("evaluation on");
        eprintln!(
            "{model:?} {rotation:?}: loss {} -> {best} in {steps} steps; MPJPE {:.1} -> {:.1} mm, PVE {:.1} -> {:.1} mm",
            first.losses.total, before.mpjpe_mm, after.mpjpe_mm, before.pve_mm, after.pve_mm
        );
        assert!(best <= first.losses.total / 5.0, "{model:?} {rotation:?}");
        assert!(
            after.mpjpe_mm < 0.7 * before.mpjpe_mm,
            "{model:?} {rotation:?}"
        );
        assert!(after.mpjpe_uvd_mm.is_nan());
    }
    Ok(())
}

/// Two steps, checkpoint, two more equal a resumed trainer's two steps bit for bit; the
/// checkpoint is what `ikolbackbone model=hkmr` loads.
#[test]
fn regressor_resume_is_exact_and_the_checkpoint_loads() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut cfg = config(ModelChoice::Hkmr, "resume-hkmr");
    cfg.batch_size = 3;
    let mut a = Trainer::new(cfg.clone(), &dev)?;
    for _ in 0..2 {
        a.train_step()?;
    }
    let ckpt = a.save_checkpoint(&cfg.out_dir)?;
    let cont: Vec<f64> = (0..2)
        .map(|_| Ok(a.train_step()?.losses.total))
        .collect::<anyhow::Result<_>>()?;
    let mut b = Trainer::resume(&ckpt, None, &dev)?;
    assert_eq!(b.step(), 2);
    let resumed: Vec<f64> = (0..2)
        .map(|_| Ok(b.train_step()?.losses.total))
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(cont, resumed);
    let r = DirectRegressor::load(&ckpt, &dev)?;
    assert_eq!(Some(*r.config()), cfg.regressor_net());
    let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &dev)?;
    assert_eq!(r.infer(&x)?.theta.dims(), &[1, SMPL_JOINTS, 3]);
    std::fs::remove_dir_all(&cfg.out_dir)?;
    Ok(())
}

/// SPIN's fitter on a batch predicted by an untrained regressor: every sample gets a stored fit
/// whose reprojection error is below the prediction's, and samples without 3D labels are
/// supervised by it.
#[test]
fn spin_fits_beat_the_prediction_and_supervise_hidden_samples() -> anyhow::Result<()> {
    use ikol_train::data::{Batch, SynthDataset, SynthOptions};
    use ikol_train::spin::{Prediction, SpinConfig, SpinLoop};
    let dev = Device::Cpu;
    let cfg = config(ModelChoice::Hkmr, "spin-step");
    let body = cfg.body.load()?;
    let ds = SynthDataset::new(
        SynthOptions::new(cfg.net.input_size, cfg.net.num_betas, cfg.body),
        3,
        4,
    )?;
    let batch = Batch::gather(&ds, &[0, 1, 2, 3], &dev)?;
    // Seeded weights (candle's own initialisers draw from an unseeded RNG: an untrained net's
    // root depth then falls behind the camera in some runs, and that sample gets no fit).
    let net_cfg = cfg.regressor_net().unwrap();
    let varmap = candle_nn::VarMap::new();
    ikol_backbone::RegressorNet::new(
        &net_cfg,
        ikol_train::train::seeded_var_builder(&varmap, cfg.seed, DType::F32, &dev),
    )?;
    let net = DirectRegressor::from_varmap(&net_cfg, &varmap, &dev)?;
    let last = net.infer(&batch.images)?;
    let spin_cfg = SpinConfig {
        max_error: 1.0,
        ..SpinConfig::default()
    };
    let mut spin = SpinLoop::new(spin_cfg, body, 4, cfg.net.num_betas)?;
    let pred = Prediction::from_regressor(&last, &batch, 64)?;
    let sup = spin.step(
        &[0, 1, 2, 3],
        &[true, true, false, false],
        &pred,
        &batch,
        64,
    )?;
    assert_eq!(spin.store.filled(), 4);
    for (i, (&fit, &pred)) in spin
        .store
        .error
        .iter()
        .zip(&sup.predicted_error)
        .enumerate()
    {
        eprintln!(
            "sample {i}: reprojection {:.3} -> {:.3} of the crop side",
            pred, fit
        );
        assert!(
            fit < 0.5 * pred,
            "sample {i}: fit {fit} vs prediction {pred}"
        );
    }
    assert_eq!(sup.from_fits, 2);
    assert_eq!(sup.weight_3d.to_vec1::<f32>()?, vec![1.0; 4]);
    // Labelled samples keep their ground truth; hidden ones get the fit's joints.
    let (gt, got) = (batch.joints.to_vec3::<f32>()?, sup.joints.to_vec3::<f32>()?);
    assert_eq!(gt[2], got[2]);
    assert_ne!(gt[0], got[0]);
    Ok(())
}

/// SPIN's supervision of a hidden sample for the heatmap network, started from a perfect
/// prediction (the IKOL layer's input = the labels: uvd, rotations, shape): the prediction
/// reprojects onto the 2D keypoints (its root where `Prediction::from_solution` puts it); moved
/// off them, the fit brings it back, and the targets the fit gives (rotations, twist by
/// swing-twist of its rotations, root-relative joints up to scale) equal the data generator's
/// labels, which come from the sampled pose by another route (`sampling::ground_truth` in model
/// axes, then the camera).
#[test]
fn spin_targets_from_a_perfect_heatmap_prediction_are_the_labels() -> anyhow::Result<()> {
    use anyhow::Context;
    use ikol_backbone::{DEPTH_FACTOR_M, NetOutput};
    use ikol_train::data::{Batch, SynthDataset, SynthOptions};
    use ikol_train::spin::{Prediction, SpinConfig, SpinLoop};
    let dev = Device::Cpu;
    let cfg = config(ModelChoice::Heatmap, "spin-heatmap");
    let body = cfg.body.load()?;
    let ds = SynthDataset::new(
        SynthOptions::new(cfg.net.input_size, cfg.net.num_betas, cfg.body),
        5,
        3,
    )?;
    let batch = Batch::gather(&ds, &[0, 1, 2], &dev)?;
    let out = labels_as_output(&batch)?;
    let mut pred = Prediction::from_solution(&batch.rotations, &out, &batch, cfg.net.input_size)?;
    let mut spin = SpinLoop::new(SpinConfig::default(), body, 3, cfg.net.num_betas)?;
    let hidden = [true, true, true];
    let sup = spin.step(&[0, 1, 2], &hidden, &pred, &batch, cfg.net.input_size)?;
    for (i, e) in sup.predicted_error.iter().enumerate() {
        // uvd targets are f32: a fraction of a pixel at most.
        assert!(
            *e < 2e-3,
            "sample {i}: the prediction reprojects {e} of the crop side off"
        );
    }
    // The root's predicted depth coordinate counts (z = root_depth + d_root * 2 m): every d up
    // by 0.1 with the root depth 0.2 m less is the same body.
    let mut shifted_batch = batch.clone();
    shifted_batch.root_depth = batch.root_depth.affine(1.0, -0.1 * DEPTH_FACTOR_M)?;
    let shifted = NetOutput {
        uvd: out
            .uvd
            .broadcast_add(&Tensor::new(&[0f32, 0.0, 0.1], &dev)?)?,
        ..out.clone()
    };
    let moved = Prediction::from_solution(
        &batch.rotations,
        &shifted,
        &shifted_batch,
        cfg.net.input_size,
    )?;
    for (a, b) in moved.translation.iter().zip(&pred.translation) {
        let (a, b) = (a.context("no translation")?, b.context("no translation")?);
        assert!((a - b).norm() < 1e-5, "{a:?} vs {b:?}");
    }
    // The body moved off its keypoints (root 5 cm aside, 30 cm deeper): the fit brings it back,
    // beats the prediction and supervises.
    for t in pred.translation.iter_mut().flatten() {
        *t += ikol_body::nalgebra::Vector3::new(0.05, -0.03, 0.3);
    }
    let mut spin = SpinLoop::new(
        SpinConfig::default(),
        cfg.body.load()?,
        3,
        cfg.net.num_betas,
    )?;
    let sup = spin.step(&[0, 1, 2], &hidden, &pred, &batch, cfg.net.input_size)?;
    assert_eq!(
        sup.from_fits, 3,
        "{:?} vs {:?}",
        spin.store.error, sup.predicted_error
    );
    let close = |a: &Tensor, b: &Tensor, tol: f32, what: &str| -> anyhow::Result<()> {
        let d = a.sub(b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(d < tol, "{what}: largest difference {d}");
        Ok(())
    };
    // Within a few degrees: the fitted shape differs (below), the pose follows it a little, and
    // the twist axis is the rest bone, which the shape tilts.
    close(&sup.rotations, &batch.rotations, 5e-2, "rotations")?;
    close(&sup.twist, &batch.twist, 5e-2, "twist (cos, sin)")?;
    // From 2D alone a body's size trades against its depth and the shape prior decides (the
    // fitted shape comes out near the mean): the joints equal the labels up to a scale per
    // sample and the proportions the shape changes (centimetres; a limb flipped in depth would
    // be decimetres off).
    for i in 0..3 {
        let (a, b) = (sup.joints.get(i)?, batch.joints.get(i)?);
        let scale = (a.mul(&b)?.sum_all()?.to_scalar::<f32>()?)
            / (b.sqr()?.sum_all()?.to_scalar::<f32>()?);
        assert!((0.7..1.3).contains(&scale), "sample {i}: scale {scale}");
        close(
            &a,
            &b.affine(f64::from(scale), 0.0)?,
            5e-2,
            "joints up to scale (m)",
        )?;
    }
    assert_eq!(sup.weight_3d.to_vec1::<f32>()?, vec![1.0; 3]);
    Ok(())
}

/// A fit stored from one draw of a sample supervises a later flipped draw of it mirrored: the
/// fit of the unflipped draws (started from their labels moved off the keypoints) becomes, for
/// the flipped draws (hidden, nothing to fit), targets that equal the flipped draws' own labels,
/// which the data generator mirrors by another route (the ground truth before the crop is
/// made); used unmirrored they would be the other side's pose.
#[test]
fn a_stored_fit_supervises_a_flipped_draw_mirrored() -> anyhow::Result<()> {
    use ikol_train::augment::Augment;
    use ikol_train::data::{Batch, SynthDataset, SynthOptions};
    use ikol_train::spin::{Prediction, SpinConfig, SpinLoop};
    let dev = Device::Cpu;
    let cfg = config(ModelChoice::Heatmap, "spin-flip");
    let size = cfg.net.input_size;
    let ds = SynthDataset::new(SynthOptions::new(size, cfg.net.num_betas, cfg.body), 5, 3)?;
    let idx = [0, 1, 2];
    let plain = Batch::gather(&ds, &idx, &dev)?;
    let flip_only = Augment {
        scale: 0.0,
        rotation_prob: 0.0,
        flip_prob: 1.0,
        colour: 0.0,
        occlusion_area: 0.0,
        ..Augment::default()
    };
    let flipped = Batch::gather_augmented(&ds, &idx, &flip_only, 1, &dev)?;
    assert_eq!(
        (plain.mirrored.clone(), flipped.mirrored.clone()),
        (vec![false; 3], vec![true; 3])
    );
    // Fits of the `fitted` draws, started from their labels moved off the keypoints, stored;
    // then the `supervised` draws, hidden, with nothing to fit: the store alone supervises.
    let store_then_supervise =
        |fitted: &Batch, shift: Vector3<f64>, supervised: &Batch| -> anyhow::Result<_> {
            let out = labels_as_output(fitted)?;
            let mut pred = Prediction::from_solution(&fitted.rotations, &out, fitted, size)?;
            for t in pred.translation.iter_mut().flatten() {
                *t += shift;
            }
            let mut spin = SpinLoop::new(
                SpinConfig::default(),
                cfg.body.load()?,
                3,
                cfg.net.num_betas,
            )?;
            spin.step(&idx, &[false; 3], &pred, fitted, size)?;
            assert_eq!(spin.store.filled(), 3);
            let none = Prediction {
                translation: vec![None; 3],
                ..pred
            };
            let sup = spin.step(&idx, &[true; 3], &none, supervised, size)?;
            assert_eq!(sup.from_fits, 3);
            Ok(sup)
        };
    let sup = store_then_supervise(&plain, Vector3::new(0.05, -0.03, 0.3), &flipped)?;
    let largest = |a: &Tensor, b: &Tensor| -> anyhow::Result<f32> {
        Ok(a.sub(b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
    };
    // Within a few degrees, as the fit of the unflipped draw is to its own labels.
    let d = largest(&sup.rotations, &flipped.rotations)?;
    assert!(
        d < 5e-2,
        "rotations of the flipped draw: largest difference {d}"
    );
    let unmirrored = largest(&plain.rotations, &flipped.rotations)?;
    assert!(
        unmirrored > 0.3,
        "the draws' poses differ by {unmirrored} only"
    );
    // Joints up to the scale the 2D-only fit leaves free.
    for i in 0..3 {
        let (a, b) = (sup.joints.get(i)?, flipped.joints.get(i)?);
        let scale = (a.mul(&b)?.sum_all()?.to_scalar::<f32>()?)
            / (b.sqr()?.sum_all()?.to_scalar::<f32>()?);
        let d = largest(&a, &b.affine(f64::from(scale), 0.0)?)?;
        assert!(d < 5e-2, "sample {i}: joints {d} m off the flipped labels");
    }
    // The other way round: fits of the flipped draws are stored as the dataset's person and
    // supervise the unflipped draws.
    let sup = store_then_supervise(&flipped, Vector3::new(-0.04, 0.02, 0.25), &plain)?;
    let d = largest(&sup.rotations, &plain.rotations)?;
    assert!(
        d < 5e-2,
        "rotations of the unflipped draw: largest difference {d}"
    );
    Ok(())
}

/// SPIN's static fits (`fitting_in_the_loop.prefill`): from the rest pose facing the camera and
/// turned away, with no network, the fitter puts every synthetic sample's body on its 2D
/// keypoints; the bodies it finds face the way the generator's do and are nearer its 3D joints
/// than the rest pose (the labels, which the fit never sees).
#[test]
fn prefill_fits_every_sample_from_the_rest_pose() -> anyhow::Result<()> {
    use ikol_train::data::{Dataset, SynthDataset, SynthOptions};
    use ikol_train::spin::{SpinConfig, SpinLoop};
    let dev = Device::Cpu;
    let cfg = config(ModelChoice::Flat, "spin-prefill");
    let size = cfg.net.input_size;
    let n = 8;
    let ds = SynthDataset::new(SynthOptions::new(size, cfg.net.num_betas, cfg.body), 9, n)?;
    let spin_cfg = SpinConfig {
        prefill: true,
        iterations: 30,
        ..SpinConfig::default()
    };
    let mut spin = SpinLoop::new(spin_cfg, cfg.body.load()?, n, cfg.net.num_betas)?;
    let idx: Vec<usize> = (0..n).collect();
    let good = spin.prefill(&ds, &idx, size, &dev)?;
    assert_eq!(spin.store.filled(), n);
    eprintln!("errors (fraction of the crop side): {:?}", spin.store.error);
    assert!(good >= n - 1, "{good} of {n} fits below max_error");
    let body = cfg.body.load()?;
    let root_relative = |rotations: &[Matrix3<f64>], beta: &[f64]| -> anyhow::Result<Vec<_>> {
        let rest = body.rest_joints(&beta[..body.num_betas.min(beta.len())])?;
        let (_, posed) = ikol_body::forward_kinematics(rotations, &rest, &SMPL24_PARENTS);
        Ok(posed
            .iter()
            .map(|p| p - posed[0])
            .collect::<Vec<Vector3<f64>>>())
    };
    let (mut facing, mut fit_err, mut rest_err) = (0, 0.0, 0.0);
    for i in 0..n {
        let sample = ds.get(i)?;
        let th = &spin.store.theta[i];
        let fit: Vec<Matrix3<f64>> = (0..SMPL_JOINTS)
            .map(|j| axis_angle_to_matrix(&Vector3::new(th[3 * j], th[3 * j + 1], th[3 * j + 2])))
            .collect();
        // The body's forward axis (model +z) in the camera.
        let r = &sample.rotations[0];
        let label_forward = Vector3::new(f64::from(r[2]), f64::from(r[5]), f64::from(r[8]));
        facing += usize::from(fit[0].column(2).dot(&label_forward) > 0.0);
        let truth: Vec<Vector3<f64>> = sample
            .joints
            .iter()
            .map(|p| Vector3::new(f64::from(p[0]), f64::from(p[1]), f64::from(p[2])))
            .collect();
        fit_err += ikol_eval::metrics::pa_mpjpe(&root_relative(&fit, &spin.store.beta[i])?, &truth);
        let mut rest = vec![Matrix3::identity(); SMPL_JOINTS];
        rest[0] = fit[0];
        rest_err += ikol_eval::metrics::pa_mpjpe(&root_relative(&rest, &[])?, &truth);
    }
    let (fit_err, rest_err) = (1e3 * fit_err / n as f64, 1e3 * rest_err / n as f64);
    eprintln!("PA-MPJPE: fits {fit_err:.1} mm, the rest pose turned as they are {rest_err:.1} mm");
    assert!(facing >= n - 1, "{facing} of {n} fits face the labels' way");
    assert!(
        fit_err < 0.9 * rest_err,
        "fits {fit_err} mm, rest pose {rest_err} mm"
    );
    Ok(())
}

/// A saved fit store says its fits are of the dataset's person (flipped draws' mirrored back);
/// a file without that key, as written before, reads back as not (a resume then warns).
#[test]
fn fit_store_files_say_which_frame_their_fits_are_in() -> anyhow::Result<()> {
    use ikol_train::spin::FitStore;
    let dir = std::env::temp_dir().join(format!("ikol-fits-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut store = FitStore::new(3, 2);
    store.error[1] = 0.01;
    store.theta[1][4] = 0.3;
    store.beta[1][0] = -0.5;
    let path = dir.join("a.fits.safetensors");
    store.save(&path)?;
    let back = FitStore::load(&path, 3, 2)?;
    assert!(back.dataset_frame);
    assert_eq!(back, store);
    // The same tensors without the metadata: an old file.
    let old = dir.join("old.fits.safetensors");
    candle_core::safetensors::save(&candle_core::safetensors::load(&path, &Device::Cpu)?, &old)?;
    let back = FitStore::load(&old, 3, 2)?;
    assert!(!back.dataset_frame);
    assert_eq!(
        (back.theta, back.beta, back.error),
        (store.theta, store.beta, store.error)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// SPIN mode resumes exactly, with a body regressor and with the heatmap network (fits started
/// from its IKOL solution): the fit store is written with the checkpoint and read back.
#[test]
fn spin_resume_is_exact() -> anyhow::Result<()> {
    for model in [ModelChoice::Flat, ModelChoice::Heatmap] {
        spin_resume_is_exact_for(model)?;
    }
    Ok(())
}

fn spin_resume_is_exact_for(model: ModelChoice) -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut cfg = config(model, &format!("resume-spin-{model:?}"));
    cfg.solver.enabled = model == ModelChoice::Heatmap;
    cfg.batch_size = 4;
    cfg.hide_3d_fraction = 0.5;
    cfg.fitting_in_the_loop = Some(ikol_train::spin::SpinConfig {
        iterations: 3,
        ..Default::default()
    });
    let mut a = Trainer::new(cfg.clone(), &dev)?;
    for _ in 0..2 {
        a.train_step()?;
    }
    let ckpt = a.save_checkpoint(&cfg.out_dir)?;
    let store = ikol_train::spin::store_path_for(&ckpt);
    assert!(store.exists());
    let saved = ikol_train::spin::FitStore::load(&store, 8, cfg.net.num_betas)?;
    assert!(saved.filled() > 0, "{model:?}: no fit stored");
    let cont: Vec<(f64, usize)> = (0..2)
        .map(|_| {
            let r = a.train_step()?;
            Ok((r.losses.total, r.fits))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut b = Trainer::resume(&ckpt, None, &dev)?;
    let resumed: Vec<(f64, usize)> = (0..2)
        .map(|_| {
            let r = b.train_step()?;
            Ok((r.losses.total, r.fits))
        })
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(cont, resumed, "{model:?}");
    assert!(cont.iter().all(|c| c.0.is_finite()), "{model:?}: {cont:?}");
    // A store of another training set is refused by name.
    let Err(e) = ikol_train::spin::FitStore::load(&store, 9, cfg.net.num_betas) else {
        anyhow::bail!("a store of 8 samples was read for 9");
    };
    let e = e.to_string();
    assert!(
        e.contains("fits.safetensors") && e.contains("another training set"),
        "{e}"
    );
    std::fs::remove_dir_all(&cfg.out_dir)?;
    Ok(())
}

/// `ikol-train compare` at a toy budget: every run trains, the table has a row per run and the
/// pictures are written.
#[test]
fn compare_runs_every_system_and_writes_the_table() -> anyhow::Result<()> {
    use ikol_train::compare::{CompareOptions, ENTRIES, run};
    let o = CompareOptions {
        out: std::env::temp_dir().join(format!("ikol-compare-{}", std::process::id())),
        steps: 2,
        count: 4,
        eval_count: 2,
        eval_every: 2,
        batch_size: 2,
        width: 4,
        ..CompareOptions::default()
    };
    let outcomes = run(&o, &Device::Cpu, false)?;
    assert_eq!(outcomes.len(), ENTRIES.len());
    assert!(outcomes.iter().all(|r| r.eval.mpjpe_mm.is_finite()));
    let md = std::fs::read_to_string(o.out.join("results.md"))?;
    assert_eq!(md.lines().count(), 2 + ENTRIES.len());
    for f in ["curves.png", "bars.png", "hkmr-spin/config.json"] {
        assert!(o.out.join(f).exists(), "{f}");
    }
    // The written config is the run's: it reads back and validates.
    let c = TrainConfig::from_file(&o.out.join("hkmr-spin/config.json"))?;
    assert!(c.fitting_in_the_loop.is_some() && c.hide_3d_fraction == 0.5);
    std::fs::remove_dir_all(&o.out)?;
    Ok(())
}
