//! Where a call's time goes: every operator of the plan tract runs for one review, timed, with
//! the kernel each matrix product runs and its multiply-adds (`feelings bench --profile`).

use std::time::Instant;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;

use crate::classifier::{ClassifyError, TractClassifier};

/// One operator of the plan, timed over several calls.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// The node's name in the optimised graph.
    pub node: String,
    /// The operator's name (`OptMatMul`, `Softmax`, ...).
    pub op: String,
    /// For a matrix product: the kernels tract chose (`avx512vnni_mmm_i32_16x16`, ...).
    pub kernel: Option<String>,
    /// For a matrix product: `m×k×n` of one product (the leading axes multiply the count).
    pub shape: Option<String>,
    /// For a matrix product: multiply-adds per call.
    pub macs: Option<u64>,
    /// Mean seconds per call.
    pub seconds: f64,
}

impl TractClassifier {
    /// Runs the plan `row` takes `runs` times (after one untimed call) and times each of its
    /// operators, in plan order.
    pub fn profile(&self, row: &[u32], runs: usize) -> Result<Vec<OpTime>, ClassifyError> {
        let fail = |e: TractError| ClassifyError::Inference(format!("{e:#}"));
        let plan = self.plan_for(row.len()).clone();
        let mut times: Vec<f64> = vec![0.0; plan.model().nodes().len()];
        for run in 0..=runs {
            let mut state = TypedSimpleState::new(&plan).map_err(fail)?;
            let inputs = self.inputs(row)?;
            state
                .run_plan_with_eval(inputs, |ctx, state, node, input| {
                    let start = Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(ctx, state, node, input);
                    if run > 0 {
                        times[node.id] += start.elapsed().as_secs_f64();
                    }
                    out
                })
                .map_err(fail)?;
        }
        let model = plan.model();
        Ok(plan
            .order_without_consts()
            .iter()
            .map(|&id| {
                let node = model.node(id);
                let product = node.op_as::<OptMatMul>().map(describe_product);
                let (kernel, shape, macs) = match product {
                    Some((k, s, m)) => (Some(k), Some(s), m),
                    None => (None, None, None),
                };
                OpTime {
                    node: node.name.clone(),
                    op: node.op().name().to_string(),
                    kernel,
                    shape,
                    macs,
                    seconds: times[id] / runs.max(1) as f64,
                }
            })
            .collect())
    }
}

/// The kernels, `m×k×n` and multiply-adds per call of a matrix product.
fn describe_product(op: &OptMatMul) -> (String, String, Option<u64>) {
    let kernel = op
        .mmm
        .iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join("/");
    let dim = |axis: Option<usize>| axis.map_or(TDim::Val(1), |a| op.c_fact.shape[a].clone());
    let (m, n) = (dim(op.c_m_axis), dim(op.c_n_axis));
    let k = op.guess_k().unwrap_or(TDim::Val(0));
    let shape = format!("{m}×{k}×{n}");
    let volume: Option<i64> = op.c_fact.shape.iter().map(|d| d.as_i64()).product();
    let macs = volume.zip(k.as_i64()).map(|(v, k)| (v as u64) * (k as u64));
    (kernel, shape, macs)
}
