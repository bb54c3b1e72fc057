//! `gridwatch.QLinearSiLU`: the int8 model's SiLU (x * sigmoid(x)) as one operator.
//!
//! ONNX Runtime has no int8 SiLU: a quantized model runs it as an int8 sigmoid and an
//! int8 multiply, two passes over every activation that cost the int8 model more than
//! its convolutions gain (docs/performance.md). A uint8 input has only 256 values, so
//! the whole activation is one 256-entry table, built when the session loads, from the
//! scales and zero points `scripts/quantize-model` writes on each node:
//!
//!   y = saturate(round_half_even(silu((x - x_zero_point) * x_scale) / y_scale) + y_zero_point)
//!
//! which is QuantizeLinear(SiLU(DequantizeLinear(x))): one rounding, not the two of the
//! sigmoid and the multiply.

use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorDomain, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

/// The custom operator domain the int8 model's nodes name.
const DOMAIN: &str = "gridwatch";

/// The domain to register on every session; a model without these nodes ignores it.
pub fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(DOMAIN)?.add(QLinearSiLU)
}

struct QLinearSiLU;

impl Operator for QLinearSiLU {
    type Kernel<'attr> = Table;

    fn name(&self) -> &str {
        "QLinearSiLU"
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [OperatorInput::required(TensorElementType::Uint8)]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Uint8)]
    }

    fn create_kernel<'attr>(&self, info: &KernelContext<'attr>) -> ort::Result<Table> {
        let node = info.node_name().unwrap_or_default();
        let scale = |name: &str| {
            info.get::<f32>(name).filter(|s| s.is_finite() && *s > 0.0).ok_or_else(|| {
                ort::Error::new(format!("QLinearSiLU node {node}: attribute {name} must be a float > 0"))
            })
        };
        let zero_point = |name: &str| {
            info.get::<i64>(name)
                .and_then(|z| u8::try_from(z).ok())
                .ok_or_else(|| ort::Error::new(format!("QLinearSiLU node {node}: attribute {name} must be 0..=255")))
        };
        let x = Quantized { scale: scale("x_scale")?, zero_point: zero_point("x_zero_point")? };
        let y = Quantized { scale: scale("y_scale")?, zero_point: zero_point("y_zero_point")? };
        Ok(Table::new(x, y))
    }
}

/// One tensor's uint8 quantization.
#[derive(Debug, Clone, Copy)]
struct Quantized {
    scale: f32,
    zero_point: u8,
}

impl Quantized {
    fn dequantize(self, q: u8) -> f32 {
        (f32::from(q) - f32::from(self.zero_point)) * self.scale
    }

    fn quantize(self, v: f32) -> u8 {
        // `as` saturates, as QuantizeLinear does.
        ((v / self.scale).round_ties_even() + f32::from(self.zero_point)) as u8
    }
}

/// The kernel: the activation for every possible input value.
struct Table([u8; 256]);

impl Table {
    fn new(x: Quantized, y: Quantized) -> Table {
        Table(std::array::from_fn(|q| {
            let v = x.dequantize(q as u8);
            y.quantize(v / (1.0 + (-v).exp()))
        }))
    }

    fn apply(&self, input: &[u8], output: &mut [u8]) {
        for (o, &i) in output.iter_mut().zip(input) {
            *o = self.0[usize::from(i)];
        }
    }
}

impl Kernel for Table {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = ctx.input(0)?.ok_or_else(|| ort::Error::new("QLinearSiLU: no input"))?;
        let (shape, input) = input.try_extract_tensor::<u8>()?;
        let mut output = ctx.output(0, shape.to_vec())?.ok_or_else(|| ort::Error::new("QLinearSiLU: no output"))?;
        let (_, output) = output.try_extract_tensor_mut::<u8>()?;
        self.apply(input, output);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_silu_quantized_once() {
        // x spans -8..8 (step 1/16, zero at 128); y spans -0.3..~8 (step 1/30, zero at 9).
        let x = Quantized { scale: 1.0 / 16.0, zero_point: 128 };
        let y = Quantized { scale: 1.0 / 30.0, zero_point: 9 };
        let table = Table::new(x, y);
        let mut out = [0u8; 4];
        table.apply(&[128, 144, 112, 255], &mut out);
        // silu(0) = 0; silu(1) = 0.731 -> 21.9 steps; silu(-1) = -0.269 -> -8.07 steps;
        // silu(7.9375) = 7.935 -> 238.05 steps.
        assert_eq!(out, [9, 9 + 22, 9 - 8, 9 + 238]);
    }

    #[test]
    fn results_beyond_the_output_range_saturate() {
        let x = Quantized { scale: 0.5, zero_point: 0 };
        let y = Quantized { scale: 0.01, zero_point: 100 };
        let table = Table::new(x, y);
        // x = 127.5 -> silu 127.5 -> 12,850 steps: 255. x = 0 -> 100.
        assert_eq!((table.0[255], table.0[0]), (255, 100));
    }
}
