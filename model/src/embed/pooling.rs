//! Mean pooling over the attention mask and L2 normalisation: how sentence-transformers turns
//! per-token states into one sentence vector.

use candle_core::{Result, Tensor};

/// `hidden` is (batch, tokens, dim); `mask` is (batch, tokens) with 1 for real tokens and 0 for
/// padding. Returns (batch, dim): the mean of each text's real-token states, scaled to unit length.
pub(super) fn mean_normalised(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?;
    let summed = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
    // sentence-transformers clamps the count at 1e-9 and the norm at 1e-12 (torch's normalize);
    // the same floors keep an empty text from dividing by zero here.
    let counts = mask.sum_keepdim(1)?.clamp(1e-9, f64::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    mean.broadcast_div(&norms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn padding_is_left_out_of_the_mean() {
        let dev = Device::Cpu;
        // One text of two real tokens and one padding token whose state is huge.
        let hidden = Tensor::new(&[[[3.0f32, 0.0], [1.0, 0.0], [1000.0, 1000.0]]], &dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 0]], &dev).unwrap();
        let v = mean_normalised(&hidden, &mask).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(v.len(), 1);
        assert!((v[0][0] - 1.0).abs() < 1e-6 && v[0][1].abs() < 1e-6, "{v:?}");
    }
}
