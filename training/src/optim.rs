//! AdamW (Loshchilov and Hutter 2019, Algorithm 2) with inspectable state, so checkpoints can carry
//! the moments and resume exactly (candle-nn's `AdamW` keeps them private).
//!
//! ```text
//! m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//! theta = theta (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//! ```

use candle_core::{Result, Tensor, Var};

/// One parameter's state.
#[derive(Debug)]
pub struct Slot {
    pub name: String,
    pub var: Var,
    pub m: Tensor,
    pub v: Tensor,
}

#[derive(Debug)]
pub struct AdamW {
    pub slots: Vec<Slot>,
    /// Updates taken so far (t of the bias correction).
    pub t: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamW {
    pub fn new(
        params: Vec<(String, Var)>,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                let z = var.as_tensor().zeros_like()?;
                Ok(Slot {
                    name,
                    m: z.clone(),
                    v: z,
                    var,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            slots,
            t: 0,
            beta1,
            beta2,
            eps,
            weight_decay,
        })
    }

    /// One update with gradients `grads[i]` of `slots[i]` (None: no gradient, skipped), each
    /// multiplied by `grad_scale` (gradient clipping).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64, grad_scale: f64) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(t);
        let c2 = 1.0 - b2.powi(t);
        for (slot, g) in self.slots.iter_mut().zip(grads) {
            let Some(g) = g else { continue };
            let g = if grad_scale == 1.0 {
                g.detach()
            } else {
                g.detach().affine(grad_scale, 0.0)?
            };
            slot.m = slot.m.affine(b1, 0.0)?.add(&g.affine(1.0 - b1, 0.0)?)?;
            slot.v = slot
                .v
                .affine(b2, 0.0)?
                .add(&g.sqr()?.affine(1.0 - b2, 0.0)?)?;
            let m_hat = slot.m.affine(1.0 / c1, 0.0)?;
            let v_hat = slot.v.affine(1.0 / c2, 0.0)?;
            let upd = m_hat.div(&v_hat.sqrt()?.affine(1.0, self.eps)?)?;
            let theta = slot.var.as_tensor().detach();
            let next = theta
                .affine(1.0 - lr * self.weight_decay, 0.0)?
                .sub(&upd.affine(lr, 0.0)?)?;
            slot.var.set(&next)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::Optimizer;

    /// Same trajectory as candle-nn's AdamW on a quadratic (with weight decay).
    #[test]
    fn matches_candle_adamw() -> Result<()> {
        let dev = Device::Cpu;
        let init = Tensor::new(&[1.0f64, -2.0, 0.5], &dev)?;
        let target = Tensor::new(&[0.3f64, 0.1, -0.4], &dev)?;
        let ours = Var::from_tensor(&init)?;
        let theirs = Var::from_tensor(&init)?;
        let (lr, wd) = (0.05, 0.01);
        let mut a = AdamW::new(vec![("x".into(), ours.clone())], 0.9, 0.999, 1e-8, wd)?;
        let mut b = candle_nn::AdamW::new(
            vec![theirs.clone()],
            candle_nn::ParamsAdamW {
                lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: wd,
            },
        )?;
        for _ in 0..20 {
            let la = ours.as_tensor().sub(&target)?.sqr()?.sum_all()?;
            let g = la.backward()?.get(ours.as_tensor()).cloned();
            a.step(&[g], lr, 1.0)?;
            let lb = theirs.as_tensor().sub(&target)?.sqr()?.sum_all()?;
            b.backward_step(&lb)?;
        }
        let d = ours
            .as_tensor()
            .sub(theirs.as_tensor())?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(d < 1e-12, "{d}");
        Ok(())
    }
}
