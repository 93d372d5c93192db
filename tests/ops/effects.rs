//! Ops with effects or without gradient: assign and group (assignments
//! happen at the end of the run; every op of that run reads the old value)
//! and stop_gradient.

use ferrometal::{DType, Graph, Tensor};

use crate::harness::{devices, rand, OpTest, Tol};

#[test]
fn a_fetched_assignment_happens_at_the_end_of_the_run() {
    for device in devices() {
        let g = Graph::new().unwrap();
        let v = g.variable_from("v", &[3], &[1.0f32, 2.0, 3.0]).unwrap();
        let doubled = g
            .add(
                g.mul(v, g.scalar(2.0).unwrap()).unwrap(),
                g.scalar(1.0).unwrap(),
            )
            .unwrap();
        let assign = g.assign(v, doubled).unwrap();
        let seen = g.mul(v, g.scalar(10.0).unwrap()).unwrap();
        assert_eq!(
            assign.shape().unwrap(),
            Vec::<i64>::new(),
            "the token is a scalar"
        );
        let mut exec = g.compile(&device).unwrap();

        // Not fetching the token: nothing happens.
        exec.run(&[], &[doubled]).unwrap();
        assert_eq!(exec.read_variable("v").unwrap(), [1.0, 2.0, 3.0]);

        // Fetched with the variable and a value computed from it: both see the old value.
        let out = exec.run(&[], &[v, seen, assign]).unwrap();
        assert_eq!(out[0].to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0]);
        assert_eq!(out[1].to_vec::<f32>().unwrap(), [10.0, 20.0, 30.0]);
        assert_eq!(exec.read_variable("v").unwrap(), [3.0, 5.0, 7.0]);

        // The token fetched before the values it orders: still the old value.
        let out = exec.run(&[], &[assign, seen, v]).unwrap();
        assert_eq!(out[1].to_vec::<f32>().unwrap(), [30.0, 50.0, 70.0]);
        assert_eq!(out[2].to_vec::<f32>().unwrap(), [3.0, 5.0, 7.0]);
        assert_eq!(exec.read_variable("v").unwrap(), [7.0, 11.0, 15.0]);
    }
}

#[test]
fn a_fetched_group_performs_all_its_assignments_reading_old_values() {
    for device in devices() {
        let g = Graph::new().unwrap();
        let a = g.variable_from("a", &[2], &[1.0f32, 2.0]).unwrap();
        let b = g.variable_from("b", &[2], &[10.0f32, 20.0]).unwrap();
        let x = g.placeholder("x", DType::F32, &[2]).unwrap();
        // Swap a and b, and add x to the sum of both into c: every assignment reads old values.
        let c = g.variable_from("c", &[2], &[0.0f32, 0.0]).unwrap();
        let total = g.add(g.add(a, b).unwrap(), x).unwrap();
        let group = g
            .group(&[
                g.assign(a, b).unwrap(),
                g.assign(b, a).unwrap(),
                g.assign(c, total).unwrap(),
            ])
            .unwrap();
        assert_eq!(
            group.shape().unwrap(),
            Vec::<i64>::new(),
            "the token is a scalar"
        );
        let sum = g.sum(g.add(a, b).unwrap(), &[], false).unwrap();
        let mut exec = g.compile(&device).unwrap();
        let xs = Tensor::from_slice(&device, &[2], &[0.5f32, -0.5]).unwrap();

        let out = exec.run(&[(x, &xs)], &[a, group, sum]).unwrap();
        assert_eq!(
            out[0].to_vec::<f32>().unwrap(),
            [1.0, 2.0],
            "a fetched in the run is the old value"
        );
        assert_eq!(out[2].scalar().unwrap(), 33.0);
        assert_eq!(exec.read_variable("a").unwrap(), [10.0, 20.0]);
        assert_eq!(exec.read_variable("b").unwrap(), [1.0, 2.0]);
        assert_eq!(exec.read_variable("c").unwrap(), [11.5, 21.5]);

        // Again: swapped back.
        exec.run(&[(x, &xs)], &[group]).unwrap();
        assert_eq!(exec.read_variable("a").unwrap(), [1.0, 2.0]);
        assert_eq!(exec.read_variable("b").unwrap(), [10.0, 20.0]);

        // A group of plain values computes them (and assigns nothing).
        let plain = g.group(&[sum, total]).unwrap();
        exec.run(&[(x, &xs)], &[plain]).unwrap();
        assert_eq!(exec.read_variable("a").unwrap(), [1.0, 2.0]);
    }
}

#[test]
fn an_assignment_from_a_placeholder_and_write_variable() {
    for device in devices() {
        let g = Graph::new().unwrap();
        let v = g
            .variable("v", &[2, 2], ferrometal::Init::Constant(4.0))
            .unwrap();
        let x = g.placeholder("x", DType::F32, &[2, 2]).unwrap();
        let assign = g.assign(v, x).unwrap();
        let mut exec = g.compile(&device).unwrap();
        assert_eq!(exec.read_variable("v").unwrap(), [4.0; 4]);
        let xs = Tensor::from_slice(&device, &[2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let out = exec.run(&[(x, &xs)], &[v, assign]).unwrap();
        assert_eq!(out[0].to_vec::<f32>().unwrap(), [4.0; 4]);
        assert_eq!(exec.read_variable("v").unwrap(), [1.0, 2.0, 3.0, 4.0]);
        exec.write_variable("v", &[9.0; 4]).unwrap();
        assert_eq!(
            exec.run(&[], &[v]).unwrap()[0].to_vec::<f32>().unwrap(),
            [9.0; 4]
        );
    }
}

#[test]
fn stop_gradient_is_the_identity_with_zero_gradient() {
    OpTest::new("stop_gradient", vec![rand(&[3, 4], 1).zero_grad()])
        .shape(&[3, 4])
        .tol(Tol::Exact)
        .run(&|g, v| g.stop_gradient(v[0]), &|d| d[0].clone());
    // d/dx sum(stop_gradient(x) * x * r) = x * r: only the direct path counts.
    for device in devices() {
        let g = Graph::new().unwrap();
        let x = g.placeholder("x", DType::F32, &[3]).unwrap();
        let r = g.constant(&[3], &[1.0f32, -2.0, 0.5]).unwrap();
        let y = g
            .mul(g.mul(g.stop_gradient(x).unwrap(), x).unwrap(), r)
            .unwrap();
        let loss = g.sum(y, &[], false).unwrap();
        let grad = g.gradients(loss, &[x]).unwrap()[0];
        let mut exec = g.compile(&device).unwrap();
        let xs = Tensor::from_slice(&device, &[3], &[2.0f32, 3.0, -4.0]).unwrap();
        let out = exec.run(&[(x, &xs)], &[grad]).unwrap();
        assert_eq!(out[0].to_vec::<f32>().unwrap(), [2.0, -6.0, -2.0]);
    }
}
