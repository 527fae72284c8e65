//! TensorFlow Lite's sparse tensor format and half-precision floats.
//!
//! **Sparse format** (schema table `SparsityParameters`, a variant of the TACO format of
//! Kjolstad et al., "The Tensor Algebra Compiler", OOPSLA 2017). A dense tensor of rank `n` with
//! dimensions `(d0 .. dn-1)`, optionally cut into `k`-dimensional blocks, is seen as a tensor of
//! rank `n + k`: dimension `j < n` counts blocks along original dimension `j` (its size is
//! `d_j / b_j` when `j` is blocked, `d_j` otherwise), and dimension `n + i` runs inside a block
//! along original dimension `block_map[i]`, of size `b_{block_map[i]}`. The `n + k` dimensions
//! are stored in `traversal_order`; level `l` of the traversal has metadata
//! `dim_metadata[l]`:
//! * DENSE with `dense_size`: every index `0 .. dense_size` is present; the position of child
//!   `i` of parent position `p` is `p * dense_size + i`;
//! * SPARSE_CSR with `array_segments` / `array_indices`: the children of parent position `p`
//!   are the positions `q` in `segments[p] .. segments[p + 1]`, with index `indices[q]`.
//!
//! The position reached at the last level is the index of the stored value. The original
//! coordinate along dimension `j` is `outer_j * b_j + inner_j` (`inner_j = 0` if unblocked).
//!
//! **binary16**: IEEE 754-2008 half precision (1 sign, 5 exponent bits with bias 15, 10
//! fraction bits): `(-1)^s * 2^(e - 15) * (1 + f / 1024)` for `0 < e < 31`,
//! `(-1)^s * 2^-14 * (f / 1024)` for `e = 0` (subnormals), infinities and NaN for `e = 31`.

/// How one traversal level is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DimensionMetadata {
    /// Every index `0 .. size` is stored.
    Dense { size: usize },
    /// Compressed sparse row: the children of parent position `p` have indices
    /// `indices[segments[p] .. segments[p + 1]]`.
    SparseCsr {
        segments: Vec<usize>,
        indices: Vec<usize>,
    },
}

/// The sparsity parameters of one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sparsity {
    /// A permutation of `0 .. n + k`: which dimension each storage level traverses.
    pub traversal_order: Vec<usize>,
    /// For each block dimension `n + i`, the original dimension it subdivides (empty when the
    /// tensor is not block-sparse).
    pub block_map: Vec<usize>,
    /// One entry per storage level (`n + k` of them).
    pub dim_metadata: Vec<DimensionMetadata>,
}

impl Sparsity {
    /// Expands the stored `values` into the dense row-major tensor of `shape`; absent
    /// elements are `zero`. Errors describe the inconsistency found.
    pub fn densify<T: Copy>(
        &self,
        shape: &[usize],
        values: &[T],
        zero: T,
    ) -> Result<Vec<T>, String> {
        let n = shape.len();
        let k = self.block_map.len();
        let levels = n + k;
        if self.traversal_order.len() != levels || self.dim_metadata.len() != levels {
            return Err(format!(
                "sparsity of a rank-{n} tensor with {k} block dimensions needs {levels} levels, \
                 got traversal_order of {} and dim_metadata of {}",
                self.traversal_order.len(),
                self.dim_metadata.len()
            ));
        }
        let mut seen = vec![false; levels];
        for &d in &self.traversal_order {
            if d >= levels || std::mem::replace(&mut seen[d], true) {
                return Err(format!(
                    "traversal_order {:?} is not a permutation of 0..{levels}",
                    self.traversal_order
                ));
            }
        }
        // Block size of each original dimension (1 when not blocked), from the metadata of the
        // level that traverses the block dimension (dense by construction).
        let mut block = vec![1usize; n];
        for (i, &orig) in self.block_map.iter().enumerate() {
            if orig >= n {
                return Err(format!(
                    "block_map entry {orig} is not a dimension of rank {n}"
                ));
            }
            let level = self
                .traversal_order
                .iter()
                .position(|&d| d == n + i)
                .unwrap_or(levels);
            match self.dim_metadata.get(level) {
                Some(DimensionMetadata::Dense { size })
                    if *size > 0 && shape[orig].is_multiple_of(*size) =>
                {
                    block[orig] = *size;
                }
                _ => {
                    return Err(format!(
                        "block dimension {} (of dimension {orig}) needs a dense level whose \
                         size divides {}",
                        n + i,
                        shape[orig]
                    ));
                }
            }
        }
        let total: usize = shape.iter().product();
        let mut strides = vec![1usize; n];
        for j in (0..n.saturating_sub(1)).rev() {
            strides[j] = strides[j + 1] * shape[j + 1];
        }
        let mut out = vec![zero; total];
        let ctx = Walk {
            sp: self,
            n,
            shape,
            block: &block,
            strides: &strides,
            values,
        };
        let mut coords = vec![0usize; levels];
        ctx.level(0, 0, &mut coords, &mut out)?;
        Ok(out)
    }
}

struct Walk<'a, T> {
    sp: &'a Sparsity,
    n: usize,
    shape: &'a [usize],
    block: &'a [usize],
    strides: &'a [usize],
    values: &'a [T],
}

impl<T: Copy> Walk<'_, T> {
    fn level(
        &self,
        l: usize,
        pos: usize,
        coords: &mut [usize],
        out: &mut [T],
    ) -> Result<(), String> {
        if l == coords.len() {
            let v = *self.values.get(pos).ok_or_else(|| {
                format!(
                    "value index {pos} past the {} stored values",
                    self.values.len()
                )
            })?;
            let mut flat = 0;
            for j in 0..self.n {
                let inner = self
                    .sp
                    .block_map
                    .iter()
                    .position(|&o| o == j)
                    .map_or(0, |i| coords[self.n + i]);
                let c = coords[j] * self.block[j] + inner;
                if c >= self.shape[j] {
                    return Err(format!(
                        "coordinate {c} past dimension {j} of size {}",
                        self.shape[j]
                    ));
                }
                flat += c * self.strides[j];
            }
            out[flat] = v;
            return Ok(());
        }
        let dim = self.sp.traversal_order[l];
        match &self.sp.dim_metadata[l] {
            DimensionMetadata::Dense { size } => {
                for i in 0..*size {
                    coords[dim] = i;
                    self.level(l + 1, pos * size + i, coords, out)?;
                }
            }
            DimensionMetadata::SparseCsr { segments, indices } => {
                let (Some(&a), Some(&b)) = (segments.get(pos), segments.get(pos + 1)) else {
                    return Err(format!(
                        "level {l}: array_segments has {} entries, position {pos} needs {}",
                        segments.len(),
                        pos + 2
                    ));
                };
                if a > b || b > indices.len() {
                    return Err(format!(
                        "level {l}: segment {a}..{b} is not within the {} array_indices",
                        indices.len()
                    ));
                }
                for q in a..b {
                    coords[dim] = indices[q];
                    self.level(l + 1, q, coords, out)?;
                }
            }
        }
        Ok(())
    }
}

/// Converts IEEE 754 binary16 bits to `f32` (exact: every half value is an `f32` value).
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let exp = u32::from((bits >> 10) & 0x1f);
    let frac = u32::from(bits & 0x3ff);
    match exp {
        // Subnormal: frac * 2^-24 (0x3380_0000 is 2^-24 as f32).
        0 => {
            let v = frac as f32 * f32::from_bits(0x3380_0000);
            if sign != 0 { -v } else { v }
        }
        // Infinity (frac 0) or NaN, payload kept.
        31 => f32::from_bits(sign | 0x7f80_0000 | (frac << 13)),
        // Normal: rebias the exponent from 15 to 127.
        e => f32::from_bits(sign | ((e + 112) << 23) | (frac << 13)),
    }
}
