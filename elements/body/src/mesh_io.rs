//! Writing posed meshes: Wavefront OBJ (text) and PLY (binary little-endian), the two formats
//! every mesh viewer opens.

use std::io::Write;
use std::path::Path;

use crate::error::{BodyError, Result};

/// Writes vertices and triangles as OBJ or PLY, chosen by the file extension.
pub fn write_mesh(path: &Path, vertices: &[[f32; 3]], faces: &[[u32; 3]]) -> Result<()> {
    let io = |source| BodyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let mut buf = Vec::with_capacity(vertices.len() * 40 + faces.len() * 30);
    match ext.as_deref() {
        Some("obj") => {
            writeln!(
                buf,
                "# ikol body mesh: {} vertices, {} faces",
                vertices.len(),
                faces.len()
            )
            .map_err(io)?;
            for v in vertices {
                writeln!(buf, "v {:.6} {:.6} {:.6}", v[0], v[1], v[2]).map_err(io)?;
            }
            for f in faces {
                // OBJ indices are 1-based.
                writeln!(buf, "f {} {} {}", f[0] + 1, f[1] + 1, f[2] + 1).map_err(io)?;
            }
        }
        Some("ply") => {
            write!(
                buf,
                "ply\nformat binary_little_endian 1.0\ncomment ikol body mesh\nelement vertex {}\n\
                 property float x\nproperty float y\nproperty float z\nelement face {}\n\
                 property list uchar int vertex_indices\nend_header\n",
                vertices.len(),
                faces.len()
            )
            .map_err(io)?;
            for v in vertices {
                for c in v {
                    buf.extend_from_slice(&c.to_le_bytes());
                }
            }
            for f in faces {
                buf.push(3);
                for &i in f {
                    buf.extend_from_slice(&(i as i32).to_le_bytes());
                }
            }
        }
        _ => {
            return Err(BodyError::Format {
                path: path.to_path_buf(),
                message: "unknown mesh format: use a .obj or .ply extension".into(),
            });
        }
    }
    std::fs::write(path, buf).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obj_and_ply() {
        let dir = std::env::temp_dir().join(format!("ikol-mesh-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let v = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.5]];
        write_mesh(&dir.join("t.obj"), &v, &[[0, 1, 2]]).unwrap();
        let s = std::fs::read_to_string(dir.join("t.obj")).unwrap();
        assert!(s.contains("v 0.000000 1.000000 0.500000\n") && s.ends_with("f 1 2 3\n"));
        write_mesh(&dir.join("t.ply"), &v, &[[0, 1, 2]]).unwrap();
        let b = std::fs::read(dir.join("t.ply")).unwrap();
        let header_end = b.windows(11).position(|w| w == b"end_header\n").unwrap() + 11;
        // 3 vertices x 12 bytes + 1 face x 13 bytes.
        assert_eq!(b.len() - header_end, 36 + 13);
        assert!(
            write_mesh(&dir.join("t.stl"), &v, &[])
                .unwrap_err()
                .to_string()
                .contains(".obj or .ply")
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
