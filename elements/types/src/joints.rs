//! Joint sets: SMPL-24, HybrIK-29 (SMPL-24 + 5 leaves), H36M-17 and the 14 evaluation joints.
//!
//! Tables follow the upstream HybrIK/IKOL code (`hybrik/models/layers/smpl/SMPL.py` `JOINT_NAMES`,
//! `_parents_to_children`; IKOL `children_map_opt`, `index_18_to_24`; `PW3D.EVAL_JOINTS`), as
//! recorded in `shared/reference/ikol-hybrik.md` sections 1 and 5.2.

/// Number of SMPL body joints.
pub const SMPL_JOINTS: usize = 24;
/// Number of HybrIK joints (SMPL-24 plus 5 leaf joints read from mesh vertices).
pub const HYBRIK_JOINTS: usize = 29;
/// Number of joints regressed with the Human3.6M regressor.
pub const H36M_JOINTS: usize = 17;

/// SMPL joint names in SMPL order. HybrIK calls joint 15 `jaw` and 22/23 `left_thumb`/`right_thumb`;
/// we keep SMPL's names for 0..23.
pub const SMPL24_NAMES: [&str; SMPL_JOINTS] = [
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
];

/// Names of HybrIK's 29 joints: SMPL-24 then the 5 leaves.
pub const HYBRIK29_NAMES: [&str; HYBRIK_JOINTS] = [
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
    "head_top",
    "left_middle",
    "right_middle",
    "left_bigtoe",
    "right_bigtoe",
];

/// Parent of each HybrIK joint, -1 for the root. The first 24 entries are SMPL's
/// `kintree_table[0]` with the root set to -1.
pub const HYBRIK29_PARENTS: [i8; HYBRIK_JOINTS] = [
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20,
    21, // SMPL-24
    15, 22, 23, 10, 11, // leaves
];

/// Parent of each SMPL joint, -1 for the root.
pub const SMPL24_PARENTS: [i8; SMPL_JOINTS] = {
    let mut p = [0i8; SMPL_JOINTS];
    let mut i = 0;
    while i < SMPL_JOINTS {
        p[i] = HYBRIK29_PARENTS[i];
        i += 1;
    }
    p
};

/// The child that defines each joint's swing in HybrIK-29 (`_parents_to_children` with the
/// overrides root -> spine1 and spine3 -> neck; leaves have none).
pub const HYBRIK29_CHILDREN: [i8; HYBRIK_JOINTS] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 27, 28, 15, 16, 17, 24, 18, 19, 20, 21, 22, 23, 25,
    26, //
    -1, -1, -1, -1, -1,
];

/// IKOL's 24-joint children (`children_map_opt`): as HybrIK-29 but joints whose child is a leaf
/// (10, 11, 15, 22, 23) are themselves leaves; their rotations come from the leaf quaternions.
pub const IKOL24_CHILDREN: [i8; SMPL_JOINTS] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 12, -1, -1, 15, 16, 17, -1, 18, 19, 20, 21, 22, 23, -1, -1,
];

/// SMPL joints whose local rotation IKOL-24 takes from the 5 predicted leaf quaternions, in the
/// order of the network's `decleaf` output.
pub const LEAF_ROTATION_JOINTS: [usize; 5] = [10, 11, 15, 22, 23];

/// The 18 joints whose swing angle IKOL optimises (`index_18_to_24`).
pub const INDEX_18_TO_24: [usize; 18] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
];

/// Inverse of [`INDEX_18_TO_24`]: the swing-angle slot of an SMPL joint, if it has one.
pub fn index_24_to_18(joint: usize) -> Option<usize> {
    INDEX_18_TO_24.iter().position(|&j| j == joint)
}

/// Left/right pairs of SMPL-24, used by flip augmentation and the flip test.
pub const SMPL24_FLIP_PAIRS: [(usize, usize); 9] = [
    (1, 2),
    (4, 5),
    (7, 8),
    (10, 11),
    (13, 14),
    (16, 17),
    (18, 19),
    (20, 21),
    (22, 23),
];

/// Left/right pairs of HybrIK-29: SMPL-24's plus the middle fingers and big toes.
pub const HYBRIK29_FLIP_PAIRS: [(usize, usize); 11] = [
    (1, 2),
    (4, 5),
    (7, 8),
    (10, 11),
    (13, 14),
    (16, 17),
    (18, 19),
    (20, 21),
    (22, 23),
    (25, 26),
    (27, 28),
];

/// Left/right pairs of the 23 twist entries (indexed by joint - 1: [`SMPL24_FLIP_PAIRS`] - 1).
pub const TWIST_FLIP_PAIRS: [(usize, usize); 9] = [
    (0, 1),
    (3, 4),
    (6, 7),
    (9, 10),
    (12, 13),
    (15, 16),
    (17, 18),
    (19, 20),
    (21, 22),
];

/// A mirrored twist (cos, sin) negates the angle (reference 1.3).
pub const TWIST_FLIP_SIGNS: [f32; 2] = [1.0, -1.0];

/// A mirrored local rotation as a quaternion (w, x, y, z): M R M with M = diag(-1, 1, 1)
/// negates y and z (reference 1.4).
pub const QUAT_FLIP_SIGNS: [f32; 4] = [1.0, 1.0, -1.0, -1.0];

/// Left/right pairs among the 5 leaf quaternions (order of [`LEAF_ROTATION_JOINTS`]).
pub const LEAF_FLIP_PAIRS: [(usize, usize); 2] = [(0, 1), (3, 4)];

/// Human3.6M-17 joint names in the order of HybrIK/IKOL's `J_regressor_h36m`.
pub const H36M17_NAMES: [&str; H36M_JOINTS] = [
    "pelvis",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_hip",
    "right_knee",
    "right_ankle",
    "torso",
    "neck",
    "nose",
    "head",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
];

/// Left/right pairs of H36M-17.
pub const H36M17_FLIP_PAIRS: [(usize, usize); 6] =
    [(1, 4), (2, 5), (3, 6), (11, 14), (12, 15), (13, 16)];

/// The 14 H36M-17 joints scored on 3DPW (`EVAL_JOINTS`; the pelvis is excluded).
pub const H36M_EVAL_14: [usize; 14] = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10];

/// Parent of joint `j` in HybrIK-29 (and so in SMPL-24 for `j < 24`), `None` for the root.
pub fn parent(j: usize) -> Option<usize> {
    usize::try_from(HYBRIK29_PARENTS[j]).ok()
}

/// Truncate a HybrIK-29 array to SMPL-24 (the leaves are the last five joints).
pub fn hybrik29_to_smpl24<T: Copy>(joints: &[T; HYBRIK_JOINTS]) -> [T; SMPL_JOINTS] {
    let mut out = [joints[0]; SMPL_JOINTS];
    out.copy_from_slice(&joints[..SMPL_JOINTS]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twist_pairs_are_joint_pairs_minus_one() {
        let shifted: Vec<(usize, usize)> = SMPL24_FLIP_PAIRS
            .iter()
            .map(|&(a, b)| (a - 1, b - 1))
            .collect();
        assert_eq!(shifted, TWIST_FLIP_PAIRS);
    }

    #[test]
    fn parents_precede_children_and_match_names() {
        assert_eq!(HYBRIK29_PARENTS[0], -1);
        for j in 1..HYBRIK_JOINTS {
            let p = parent(j).expect("non-root has a parent");
            assert!(
                p < j,
                "parent {p} of {j} must come first (topological order)"
            );
        }
        // Side consistency: a left joint's parent is left or central, never right.
        for (j, name) in HYBRIK29_NAMES.iter().enumerate().skip(1) {
            let pname = HYBRIK29_NAMES[parent(j).unwrap()];
            if name.starts_with("left") {
                assert!(!pname.starts_with("right"), "{name} -> {pname}");
            }
            if name.starts_with("right") {
                assert!(!pname.starts_with("left"), "{name} -> {pname}");
            }
        }
        // Spot checks by name, hand-read from SMPL's kintree.
        let idx = |n: &str| SMPL24_NAMES.iter().position(|&x| x == n).unwrap();
        assert_eq!(parent(idx("left_elbow")), Some(idx("left_shoulder")));
        assert_eq!(parent(idx("left_shoulder")), Some(idx("left_collar")));
        assert_eq!(parent(idx("left_collar")), Some(idx("spine3")));
        assert_eq!(parent(idx("head")), Some(idx("neck")));
        assert_eq!(parent(idx("right_foot")), Some(idx("right_ankle")));
        assert_eq!(&SMPL24_NAMES[..], &HYBRIK29_NAMES[..24]);
    }

    #[test]
    fn children_are_children() {
        for j in 0..HYBRIK_JOINTS {
            if let Ok(c) = usize::try_from(HYBRIK29_CHILDREN[j]) {
                assert_eq!(parent(c), Some(j), "child {c} of {j}");
            } else {
                assert!(j >= 24, "only leaves lack a child in HybrIK-29");
            }
        }
        for j in 0..SMPL_JOINTS {
            match usize::try_from(IKOL24_CHILDREN[j]) {
                Ok(c) => assert_eq!(HYBRIK29_CHILDREN[j] as usize, c),
                Err(_) => assert!(LEAF_ROTATION_JOINTS.contains(&j)),
            }
        }
        // Each IKOL-24 leaf joint is the parent of exactly one HybrIK leaf.
        for &j in &LEAF_ROTATION_JOINTS {
            assert_eq!((24..29).filter(|&l| parent(l) == Some(j)).count(), 1);
        }
        assert_eq!(HYBRIK29_CHILDREN[0], 3);
        assert_eq!(HYBRIK29_CHILDREN[9], 12);
    }

    #[test]
    fn eighteen_swing_joints() {
        // 24 joints minus root, 5 leaves = 18.
        assert_eq!(INDEX_18_TO_24.len(), 24 - 1 - LEAF_ROTATION_JOINTS.len());
        for (k, &j) in INDEX_18_TO_24.iter().enumerate() {
            assert_eq!(index_24_to_18(j), Some(k));
            assert!(IKOL24_CHILDREN[j] >= 0);
        }
        for j in [0, 10, 11, 15, 22, 23] {
            assert_eq!(index_24_to_18(j), None);
        }
    }

    #[test]
    fn flip_pairs_swap_left_and_right() {
        for &(a, b) in &HYBRIK29_FLIP_PAIRS {
            let (na, nb) = (HYBRIK29_NAMES[a], HYBRIK29_NAMES[b]);
            assert_eq!(na.replacen("left", "right", 1), nb);
            // A flipped pair's parents are a flipped pair (or the same central joint).
            let (pa, pb) = (parent(a).unwrap(), parent(b).unwrap());
            assert!(
                pa == pb || HYBRIK29_FLIP_PAIRS.contains(&(pa, pb)),
                "{na}/{nb}"
            );
        }
        assert_eq!(&HYBRIK29_FLIP_PAIRS[..9], &SMPL24_FLIP_PAIRS[..]);
        for &(a, b) in &H36M17_FLIP_PAIRS {
            assert_eq!(
                H36M17_NAMES[a].replacen("left", "right", 1),
                H36M17_NAMES[b]
            );
        }
        for &(a, b) in &LEAF_FLIP_PAIRS {
            assert!(
                SMPL24_FLIP_PAIRS.contains(&(LEAF_ROTATION_JOINTS[a], LEAF_ROTATION_JOINTS[b]))
            );
        }
    }

    #[test]
    fn h36m_eval_joints() {
        let names: Vec<&str> = H36M_EVAL_14.iter().map(|&i| H36M17_NAMES[i]).collect();
        assert_eq!(
            names,
            [
                "right_ankle",
                "right_knee",
                "right_hip",
                "left_hip",
                "left_knee",
                "left_ankle",
                "right_wrist",
                "right_elbow",
                "right_shoulder",
                "left_shoulder",
                "left_elbow",
                "left_wrist",
                "neck",
                "head"
            ]
        );
        assert!(!H36M_EVAL_14.contains(&0));
    }

    #[test]
    fn truncation_keeps_first_24() {
        let a: [usize; 29] = std::array::from_fn(|i| i * 10);
        let t = hybrik29_to_smpl24(&a);
        assert_eq!(t[23], 230);
        assert_eq!(t.len(), 24);
        assert_eq!(hybrik29_to_smpl24(&HYBRIK29_PARENTS), SMPL24_PARENTS);
    }
}
