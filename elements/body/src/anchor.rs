//! Points of a body model that a measurement refers to: a joint, or a vertex of the surface
//! (a landmark of a keypoint detector, a marker). One definition for the landmark map of the
//! front end and the model fitter of the solver.

use nalgebra::Vector3;

use crate::Posed;

/// Where a measured point sits on a body model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// At an SMPL joint.
    Joint(usize),
    /// At a mesh vertex.
    Vertex(usize),
}

impl Anchor {
    /// The anchor's position on a posed body.
    pub fn on(&self, posed: &Posed) -> Vector3<f64> {
        match *self {
            Anchor::Joint(j) => posed.joints[j],
            Anchor::Vertex(i) => {
                let p = posed.vertices[i];
                Vector3::new(p[0].into(), p[1].into(), p[2].into())
            }
        }
    }
}
