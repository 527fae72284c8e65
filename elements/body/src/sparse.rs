//! Compressed sparse row matrices for skinning weights (vertices x joints) and joint regressors
//! (joints x vertices): both are mostly zeros (at most ~9 joints per vertex, a few hundred
//! vertices per joint).

/// A CSR matrix: row `r` has entries `indices[indptr[r]..indptr[r+1]]` with values `data[..]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    pub rows: usize,
    pub cols: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub data: Vec<f64>,
}

impl Csr {
    /// Checks the structure; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.indptr.len() != self.rows + 1 {
            return Err(format!(
                "indptr has {} entries, expected rows + 1 = {}",
                self.indptr.len(),
                self.rows + 1
            ));
        }
        if self.indptr[0] != 0 || self.indptr.windows(2).any(|w| w[0] > w[1]) {
            return Err("indptr must start at 0 and never decrease".into());
        }
        let nnz = self.indptr[self.rows];
        if self.indices.len() != nnz || self.data.len() != nnz {
            return Err(format!(
                "indptr ends at {nnz} but there are {} indices and {} values",
                self.indices.len(),
                self.data.len()
            ));
        }
        if let Some(&c) = self.indices.iter().find(|&&c| c as usize >= self.cols) {
            return Err(format!(
                "column index {c} out of range (columns: {})",
                self.cols
            ));
        }
        if self.data.iter().any(|v| !v.is_finite()) {
            return Err("values contain NaN or infinity".into());
        }
        Ok(())
    }

    /// From a dense row-major matrix, keeping entries with |x| > `tol`.
    pub fn from_dense(rows: usize, cols: usize, dense: &[f64], tol: f64) -> Self {
        let mut m = Csr {
            rows,
            cols,
            indptr: vec![0],
            indices: Vec::new(),
            data: Vec::new(),
        };
        for r in 0..rows {
            for (c, &v) in dense[r * cols..(r + 1) * cols].iter().enumerate() {
                if v.abs() > tol {
                    m.indices.push(c as u32);
                    m.data.push(v);
                }
            }
            m.indptr.push(m.indices.len());
        }
        m
    }

    /// From compressed sparse column arrays (scipy's `csc_matrix`), converted to rows.
    pub fn from_csc(
        rows: usize,
        cols: usize,
        indptr: &[usize],
        indices: &[u32],
        data: &[f64],
    ) -> Self {
        let mut dense_rows: Vec<Vec<(u32, f64)>> = vec![Vec::new(); rows];
        for c in 0..cols {
            for k in indptr[c]..indptr[c + 1] {
                dense_rows[indices[k] as usize].push((c as u32, data[k]));
            }
        }
        let mut m = Csr {
            rows,
            cols,
            indptr: vec![0],
            indices: Vec::new(),
            data: Vec::new(),
        };
        for row in dense_rows {
            for (c, v) in row {
                m.indices.push(c);
                m.data.push(v);
            }
            m.indptr.push(m.indices.len());
        }
        m
    }

    /// The entries of row `r` as (column, value).
    pub fn row(&self, r: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let span = self.indptr[r]..self.indptr[r + 1];
        self.indices[span.clone()]
            .iter()
            .zip(&self.data[span])
            .map(|(&c, &v)| (c as usize, v))
    }

    /// Dense row-major copy.
    pub fn to_dense(&self) -> Vec<f64> {
        let mut d = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            for (c, v) in self.row(r) {
                d[r * self.cols + c] = v;
            }
        }
        d
    }

    /// Y = self * X for a row-major X with `k` columns (X has `cols` rows).
    pub fn mul_dense(&self, x: &[f64], k: usize) -> Vec<f64> {
        let mut y = vec![0.0; self.rows * k];
        for r in 0..self.rows {
            for (c, v) in self.row(r) {
                for j in 0..k {
                    y[r * k + j] += v * x[c * k + j];
                }
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_csc_round_trip() {
        // [[1 0 2], [0 0 3]] in CSC: indptr [0,1,1,3], indices [0,0,1], data [1,2,3].
        let m = Csr::from_csc(2, 3, &[0, 1, 1, 3], &[0, 0, 1], &[1.0, 2.0, 3.0]);
        assert_eq!(m.to_dense(), vec![1.0, 0.0, 2.0, 0.0, 0.0, 3.0]);
        assert_eq!(m, Csr::from_dense(2, 3, &m.to_dense(), 0.0));
        assert!(m.validate().is_ok());
        // [[1 0 2],[0 0 3]] * [[1],[5],[1]] = [[3],[3]]
        assert_eq!(m.mul_dense(&[1.0, 5.0, 1.0], 1), vec![3.0, 3.0]);
        let bad = Csr {
            indices: vec![0, 0, 7],
            ..m.clone()
        };
        assert!(bad.validate().unwrap_err().contains("out of range"));
        let bad = Csr {
            indptr: vec![0, 1],
            ..m
        };
        assert!(bad.validate().unwrap_err().contains("rows + 1"));
    }
}
