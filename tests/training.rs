//! The level-3 engine: steps, evaluation, inference, checkpoints, and the
//! bad input issue 5 lists. MLPs on synthetic data keep this fast.

#[path = "common/mod.rs"]
mod common;

use ferrometal::checkpoint::{self, TrainingState};
use ferrometal::{Device, Error, Loss, Model, Optimizer, Tensor, Trainer, TrainerOptions};

fn data(samples: usize, features: usize, seed: u64) -> (Vec<f32>, Vec<i32>) {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let xs: Vec<f32> = (0..samples * features).map(|_| next()).collect();
    let ys = xs
        .chunks(features)
        .map(|x| if x[0] + x[1] > 0.0 { 1 } else { 0 } + if x[2] > 0.5 { 1 } else { 0 })
        .collect();
    (xs, ys)
}

fn model() -> Model {
    Model::builder([8])
        .dense(16)
        .relu()
        .dropout(0.2)
        .dense(16)
        .batch_norm()
        .relu()
        .dense(3)
        .build()
        .unwrap()
}

fn batches(device: &Device) -> Vec<(Tensor, Tensor)> {
    (0..20)
        .map(|i| {
            let (xs, ys) = data(32, 8, i);
            (
                Tensor::from_slice(device, &[32, 8], &xs).unwrap(),
                Tensor::from_slice(device, &[32], &ys).unwrap(),
            )
        })
        .collect()
}

fn trainer(device: &Device) -> Trainer {
    Trainer::new(
        device,
        &model(),
        &Optimizer::adam(1e-2),
        Loss::CrossEntropy {
            label_smoothing: 0.05,
        },
        11,
    )
    .unwrap()
}

#[test]
fn training_lowers_the_loss_and_evaluation_counts_correct_answers() {
    for device in common::graph_devices() {
        let mut t = trainer(&device);
        let data = batches(&device);
        let first = t.evaluate(&data[0].0, &data[0].1).unwrap();
        for _ in 0..5 {
            for (x, y) in &data {
                t.step(x, y).unwrap();
            }
        }
        let last = t.evaluate(&data[0].0, &data[0].1).unwrap();
        assert!(last.loss < first.loss * 0.7, "{first:?} -> {last:?}");
        assert!(last.correct > first.correct, "{first:?} -> {last:?}");
        assert_eq!(last.count, 32);
        // predict and a separate inference engine agree with each other.
        let predicted = t.predict(&data[1].0).unwrap().to_vec::<f32>().unwrap();
        let mut engine = t.inference(&device).unwrap();
        assert_eq!(
            engine.infer(&data[1].0).unwrap().to_vec::<f32>().unwrap(),
            predicted
        );
        assert_eq!(t.output_shape().unwrap(), [3]);
    }
}

#[test]
fn resuming_from_a_checkpoint_repeats_the_uninterrupted_run_exactly() {
    for device in common::graph_devices() {
        let data = batches(&device);
        let mut straight = trainer(&device);
        let losses: Vec<f32> = data
            .iter()
            .map(|(x, y)| straight.step_with_loss(x, y).unwrap())
            .collect();

        let dir = std::env::temp_dir().join(format!("ferrometal-resume-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("half.safetensors");
        let mut first = trainer(&device);
        for (x, y) in &data[..10] {
            first.step_with_loss(x, y).unwrap();
            // Evaluations advance the run counter too; the checkpoint keeps it.
        }
        checkpoint::save(
            &first,
            &path,
            &TrainingState {
                epoch: 0,
                step: 10,
                seed: 11,
                ..Default::default()
            },
        )
        .unwrap();
        drop(first);
        let (mut resumed, state) = checkpoint::resume(&device, &path).unwrap();
        assert_eq!(state.step, 10);
        let rest: Vec<f32> = data[10..]
            .iter()
            .map(|(x, y)| resumed.step_with_loss(x, y).unwrap())
            .collect();
        assert_eq!(
            rest,
            losses[10..],
            "resumed losses must equal the uninterrupted ones bit for bit"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "no temporary file may remain: {leftovers:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn bad_checkpoints_are_refused_and_change_nothing() {
    for device in common::graph_devices() {
        let dir = std::env::temp_dir().join(format!("ferrometal-bad-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.safetensors");
        let t = trainer(&device);
        checkpoint::save(&t, &good, &TrainingState::default()).unwrap();
        let bytes = std::fs::read(&good).unwrap();

        let mut victim = trainer(&device);
        let before = victim.read_state("dense0.weight").unwrap();
        let check = |name: &str, content: &[u8], victim: &mut Trainer| {
            let path = dir.join(name);
            std::fs::write(&path, content).unwrap();
            let error = checkpoint::load_into(victim, &path).unwrap_err();
            assert!(error.message().contains(name), "{name}: {error}");
            error
        };
        assert!(matches!(
            check("empty.safetensors", &[], &mut victim),
            Error::Io(_)
        ));
        assert!(matches!(
            check(
                "truncated.safetensors",
                &bytes[..bytes.len() - 100],
                &mut victim
            ),
            Error::Io(_)
        ));
        assert!(matches!(
            check("short-header.safetensors", &bytes[..20], &mut victim),
            Error::Io(_)
        ));
        let mut flipped = bytes.clone();
        flipped[12] ^= 0x55;
        assert!(matches!(
            check("corrupt.safetensors", &flipped, &mut victim),
            Error::Io(_)
        ));
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            check("huge-header.safetensors", &huge, &mut victim),
            Error::Io(_)
        ));
        assert_eq!(
            victim.read_state("dense0.weight").unwrap(),
            before,
            "a refused checkpoint must change nothing"
        );

        // A checkpoint of another model.
        let other = Trainer::new(
            &device,
            &Model::builder([8])
                .dense(4)
                .relu()
                .dense(3)
                .build()
                .unwrap(),
            &Optimizer::sgd(0.1),
            Loss::CrossEntropy {
                label_smoothing: 0.0,
            },
            0,
        )
        .unwrap();
        let other_path = dir.join("other.safetensors");
        checkpoint::save(&other, &other_path, &TrainingState::default()).unwrap();
        let error = checkpoint::load_into(&mut victim, &other_path).unwrap_err();
        assert!(error.message().contains("another model"), "{error}");
        let missing =
            checkpoint::load_into(&mut victim, dir.join("missing.safetensors")).unwrap_err();
        assert!(
            matches!(missing, Error::Io(_)) && missing.message().contains("missing.safetensors"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn bad_batches_are_refused_with_the_parameters_unchanged() {
    for device in common::graph_devices() {
        let mut t = trainer(&device);
        let before = t.read_state("dense0.weight").unwrap();
        let (xs, _) = data(4, 8, 1);
        let inputs = Tensor::from_slice(&device, &[4, 8], &xs).unwrap();
        let out_of_range = Tensor::from_slice(&device, &[4], &[0i32, 1, 7, 2]).unwrap();
        // A GPU finds the bad label after queueing the step; synchronize reports it.
        let error = t
            .step(&inputs, &out_of_range)
            .and_then(|_| t.synchronize())
            .unwrap_err();
        assert!(matches!(error, Error::OutOfRange(_)), "{error}");
        assert!(error.message().contains('7'), "{error}");
        let wrong_shape = Tensor::from_slice(&device, &[4, 7], &xs[..28]).unwrap();
        let labels = Tensor::from_slice(&device, &[4], &[0i32, 1, 2, 0]).unwrap();
        assert!(matches!(
            t.step(&wrong_shape, &labels).unwrap_err(),
            Error::ShapeMismatch(_)
        ));
        let float_labels = Tensor::from_slice(&device, &[4], &[0.0f32; 4]).unwrap();
        assert!(matches!(
            t.step(&inputs, &float_labels).unwrap_err(),
            Error::DtypeMismatch(_)
        ));
        let empty = Tensor::from_slice::<f32>(&device, &[0, 8], &[]).unwrap();
        let no_labels = Tensor::from_slice::<i32>(&device, &[0], &[]).unwrap();
        let error = t.step(&empty, &no_labels).unwrap_err();
        assert!(error.message().contains("empty"), "{error}");
        let short_labels = Tensor::from_slice(&device, &[3], &[0i32, 1, 2]).unwrap();
        assert!(matches!(
            t.step(&inputs, &short_labels).unwrap_err(),
            Error::ShapeMismatch(_)
        ));
        assert_eq!(t.read_state("dense0.weight").unwrap(), before);
    }
}

#[test]
fn a_diverging_loss_is_an_error_naming_the_step() {
    for device in common::graph_devices() {
        let mut t = trainer(&device);
        let mut xs = data(4, 8, 2).0;
        xs[3] = f32::NAN;
        let inputs = Tensor::from_slice(&device, &[4, 8], &xs).unwrap();
        let labels = Tensor::from_slice(&device, &[4], &[0i32, 1, 2, 0]).unwrap();
        let error = t.step_with_loss(&inputs, &labels).unwrap_err();
        assert!(matches!(error, Error::Numerical(_)), "{error}");
        assert!(error.message().contains("step 1"), "{error}");
    }
}

#[test]
fn a_non_finite_step_changes_nothing_and_is_reported_with_its_number() {
    for device in common::graph_devices() {
        let mut t = trainer(&device);
        let good = batches(&device);
        t.step(&good[0].0, &good[0].1).unwrap();
        let before = common::state_of(&t);
        let mut xs = data(32, 8, 5).0;
        xs[3] = f32::NAN;
        let poisoned = Tensor::from_slice(&device, &[32, 8], &xs).unwrap();
        xs[3] = f32::INFINITY;
        let infinite = Tensor::from_slice(&device, &[32, 8], &xs).unwrap();
        // Step 2, with the loss read back: reported at once.
        let error = t.step_with_loss(&poisoned, &good[1].1).unwrap_err();
        assert!(matches!(error, Error::Numerical(_)), "{error}");
        assert!(error.message().contains("step 2 was skipped"), "{error}");
        // Steps 3 and 4 without reading anything: reported by synchronize.
        t.step(&infinite, &good[1].1).unwrap();
        t.step(&poisoned, &good[1].1).unwrap();
        let error = t.synchronize().unwrap_err();
        assert!(
            matches!(error, Error::Numerical(_)) && error.message().contains("at step 4"),
            "{error}"
        );
        t.synchronize().unwrap(); // reported once
                                  // Weights, Adam's moments, BatchNorm's running statistics and the
                                  // step counter are all as they were.
        assert_eq!(common::state_of(&t), before);
        let stats = t.stats().unwrap();
        assert_eq!(
            (stats.steps, stats.skipped_steps, stats.last_skipped_step),
            (4, 3, 4)
        );
        // Training goes on from where it was.
        t.step_with_loss(&good[2].0, &good[2].1).unwrap();
        assert_ne!(common::state_of(&t), before);
        let prediction = t.predict(&good[0].0).unwrap().to_vec::<f32>().unwrap();
        assert!(prediction.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn without_the_guard_a_non_finite_step_updates_the_weights() {
    for device in common::graph_devices() {
        let options = TrainerOptions::default().nonfinite_guard(false);
        let mut t = Trainer::with_options(
            &device,
            &model(),
            &Optimizer::adam(1e-2),
            Loss::CrossEntropy {
                label_smoothing: 0.0,
            },
            11,
            &options,
        )
        .unwrap();
        let mut xs = data(32, 8, 5).0;
        xs[0] = f32::NAN;
        let poisoned = Tensor::from_slice(&device, &[32, 8], &xs).unwrap();
        let labels = Tensor::from_slice(&device, &[32], &[1i32; 32]).unwrap();
        let error = t.step_with_loss(&poisoned, &labels).unwrap_err();
        assert!(error.message().contains("the loss of step 1"), "{error}");
        let weights = t.read_state("dense0.weight").unwrap();
        assert!(weights.iter().any(|v| v.is_nan()));
        assert_eq!(t.stats().unwrap().skipped_steps, 0);
    }
}

#[test]
fn bad_hyper_parameters_are_errors_naming_them() {
    let device = Device::cpu().unwrap();
    let loss = Loss::CrossEntropy {
        label_smoothing: 0.0,
    };
    let cases = [
        (Optimizer::sgd(f64::INFINITY), "learning_rate"),
        (Optimizer::sgd(-0.1), "learning_rate"),
        (Optimizer::adam(1e-3).beta1(1.0), "beta1"),
        (Optimizer::adam(1e-3).beta2(f64::NAN), "beta2"),
        (Optimizer::adam(1e-3).eps(-1e-8), "eps"),
        (
            Optimizer::adamw(1e-3).weight_decay(f64::NAN),
            "weight_decay",
        ),
        (Optimizer::sgd(0.1).momentum(-0.9), "momentum"),
        (Optimizer::sgd(0.1).nesterov(true), "nesterov"),
        (Optimizer::rmsprop(0.1).alpha(1.5), "alpha"),
        (Optimizer::sgd(0.1).clip_norm(f64::INFINITY), "clip_norm"),
    ];
    for (optimizer, field) in cases {
        let error = Trainer::new(&device, &model(), &optimizer, loss, 0)
            .err()
            .unwrap();
        assert!(
            matches!(error, Error::InvalidArgument(_)) && error.message().contains(field),
            "{field}: {error}"
        );
    }
    let mut t = trainer(&device);
    for bad in [f64::INFINITY, f64::NAN, -1.0] {
        let error = t.set_learning_rate(bad).unwrap_err();
        assert!(error.message().contains("learning_rate"), "{error}");
    }
}

#[test]
fn batch_norm_over_one_value_per_channel_is_refused() {
    for device in common::graph_devices() {
        let model = Model::builder([4])
            .dense(8)
            .batch_norm()
            .dense(2)
            .build()
            .unwrap();
        let mut t = Trainer::new(&device, &model, &Optimizer::sgd(0.1), Loss::Mse, 0).unwrap();
        let x = Tensor::from_slice(&device, &[1, 4], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let y = Tensor::from_slice(&device, &[1, 2], &[0.0f32, 1.0]).unwrap();
        let before = common::state_of(&t);
        let error = t.step(&x, &y).unwrap_err();
        assert!(
            matches!(error, Error::ShapeMismatch(_))
                && error.message().contains("one value per channel"),
            "{error}"
        );
        assert_eq!(common::state_of(&t), before);
        // Evaluation of one sample uses the running statistics: fine.
        t.predict(&x).unwrap();
    }
}

#[test]
fn named_layers_survive_the_model_spec_being_dropped() {
    // The trainer once kept pointers to the names of a spec that
    // Trainer::new freed; inference() then read freed memory.
    for device in common::graph_devices() {
        let model = Model::builder([8])
            .dense(16)
            .named("fc1")
            .relu()
            .dense(16)
            .batch_norm()
            .named("bn")
            .dense(3)
            .named("head")
            .build()
            .unwrap();
        let mut t = Trainer::new(&device, &model, &Optimizer::sgd(0.1), Loss::Mse, 3).unwrap();
        let x = Tensor::from_slice(&device, &[2, 8], &[0.5f32; 16]).unwrap();
        let mut inference = t.inference(&device).unwrap();
        let a = inference.infer(&x).unwrap().to_vec::<f32>().unwrap();
        let b = t.predict(&x).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(a, b);
        assert_eq!(inference.read_parameter("fc1.weight").unwrap().len(), 128);
    }
}

#[test]
fn layers_that_do_not_fit_are_named() {
    for device in common::graph_devices() {
        let model = Model::builder([1, 28, 28]).dense(10).build().unwrap();
        let error = Trainer::new(&device, &model, &Optimizer::sgd(0.1), Loss::Mse, 0)
            .err()
            .unwrap();
        assert!(
            error.message().contains("'dense0'") && error.message().contains("flatten"),
            "{error}"
        );
        let model = Model::builder([1, 4, 4]).conv2d(8, 5).build().unwrap();
        let error = Trainer::new(&device, &model, &Optimizer::sgd(0.1), Loss::Mse, 0)
            .err()
            .unwrap();
        assert!(
            matches!(error, Error::ShapeMismatch(_)) && error.message().contains("'conv2d0'"),
            "{error}"
        );
    }
}

#[test]
fn the_learning_rate_changes_without_recompiling() {
    for device in common::graph_devices() {
        let mut t = trainer(&device);
        t.set_learning_rate(0.0).unwrap();
        let data = batches(&device);
        let before = t.read_state("dense0.weight").unwrap();
        t.step(&data[0].0, &data[0].1).unwrap();
        assert_eq!(
            t.read_state("dense0.weight").unwrap(),
            before,
            "lr 0 must not move the weights"
        );
        assert_eq!(t.read_state("optimizer.lr").unwrap(), [0.0]);
        assert!(t.set_learning_rate(f64::NAN).is_err());
    }
}

mod loop_and_schedules {
    use super::*;
    use ferrometal::train::{BatchSource, EarlyStopping, Fit, FitEnd, Schedule, Scheduler};

    struct Synthetic(Device);

    impl BatchSource for Synthetic {
        fn batches(
            &self,
            _epoch: u64,
        ) -> Box<dyn Iterator<Item = ferrometal::Result<(Tensor, Tensor)>> + '_> {
            Box::new((0..8).map(move |i| {
                let (xs, ys) = data(32, 8, i);
                Ok((
                    Tensor::from_slice(&self.0, &[32, 8], &xs)?,
                    Tensor::from_slice(&self.0, &[32], &ys)?,
                ))
            }))
        }
    }

    /// Batches of which those at `poisoned` positions hold a NaN.
    struct Poisoned(Device, Vec<u64>);

    impl BatchSource for Poisoned {
        fn batches(
            &self,
            _epoch: u64,
        ) -> Box<dyn Iterator<Item = ferrometal::Result<(Tensor, Tensor)>> + '_> {
            Box::new((0..8).map(move |i| {
                let (mut xs, ys) = data(32, 8, i);
                if self.1.contains(&i) {
                    xs[5] = f32::NAN;
                }
                Ok((
                    Tensor::from_slice(&self.0, &[32, 8], &xs)?,
                    Tensor::from_slice(&self.0, &[32], &ys)?,
                ))
            }))
        }
    }

    #[test]
    fn fit_goes_past_skipped_steps_and_stops_after_too_many() {
        for device in common::graph_devices() {
            // Two bad batches an epoch: by default the first is an error.
            let source = Poisoned(device.clone(), vec![2, 5]);
            let mut t = trainer(&device);
            let error = Fit::new(2).run(&mut t, &source, None).unwrap_err();
            assert!(matches!(error, Error::Numerical(_)), "{error}");
            // Allowed: the epochs complete and report their skipped steps.
            let mut t = trainer(&device);
            let (end, reports) = Fit::new(2)
                .skipped_steps_allowed(4)
                .run(&mut t, &source, None)
                .unwrap();
            assert_eq!(end, FitEnd::Completed);
            assert_eq!(
                reports.iter().map(|r| r.skipped_steps).collect::<Vec<_>>(),
                [2, 2]
            );
            assert!(reports.iter().all(|r| r.train_loss.is_finite()));
            // The fifth skip ends the fit in epoch 3; the weights are finite,
            // and the last epoch's checkpoint was not overwritten.
            let mut t = trainer(&device);
            let mut saved_epochs = Vec::new();
            let (end, reports) = Fit::new(5)
                .skipped_steps_allowed(4)
                .on_epoch(|r| {
                    saved_epochs.push(r.epoch);
                    Ok(())
                })
                .run(&mut t, &source, None)
                .unwrap();
            assert_eq!((end, reports.len()), (FitEnd::TooManySkippedSteps, 2));
            assert_eq!(saved_epochs, [1, 2]);
            assert!(t
                .read_state("dense0.weight")
                .unwrap()
                .iter()
                .all(|v| v.is_finite()));
            assert_eq!(t.stats().unwrap().skipped_steps, 5);
        }
    }

    #[test]
    fn schedules_follow_their_formulas() {
        let mut step = Scheduler::new(
            Schedule::Step {
                every: 2,
                gamma: 0.5,
            },
            1.0,
        );
        let rates: Vec<f64> = (1..=5).map(|e| step.on_epoch_end(e, 0.0)).collect();
        assert_eq!(rates, [1.0, 0.5, 0.5, 0.25, 0.25]);
        let mut exponential = Scheduler::new(Schedule::Exponential { gamma: 0.9 }, 2.0);
        assert!((exponential.on_epoch_end(2, 0.0) - 2.0 * 0.81).abs() < 1e-12);
        let mut cosine = Scheduler::new(
            Schedule::CosineWithWarmup {
                warmup_steps: 4,
                total_steps: 14,
                min_lr: 0.1,
            },
            1.1,
        );
        assert_eq!(cosine.learning_rate(), 0.0);
        assert!((cosine.on_step(0) - 1.1 / 4.0).abs() < 1e-12);
        assert!((cosine.on_step(3) - 1.1).abs() < 1e-12);
        assert!(
            (cosine.on_step(9) - 0.6).abs() < 1e-12,
            "halfway down the cosine"
        );
        assert!((cosine.on_step(14) - 0.1).abs() < 1e-12);
        assert!((cosine.on_step(100) - 0.1).abs() < 1e-12);
        let mut plateau = Scheduler::new(
            Schedule::ReduceOnPlateau {
                factor: 0.1,
                patience: 1,
                threshold: 0.0,
                min_lr: 1e-4,
            },
            1.0,
        );
        let rates: Vec<f64> = [1.0, 0.9, 0.95, 0.95, 0.8]
            .iter()
            .enumerate()
            .map(|(e, &l)| plateau.on_epoch_end(e as u64, l))
            .collect();
        assert_eq!(rates, [1.0, 1.0, 1.0, 0.1, 0.1]);
        let mut stopping = EarlyStopping::new(2, 0.01);
        assert_eq!(
            [1.0, 0.5, 0.499, 0.6].map(|l| stopping.should_stop(l)),
            [false, false, false, true]
        );
        assert_eq!(stopping.best(), Some(0.5));
    }

    #[test]
    fn fit_trains_calls_back_and_stops_when_asked() {
        for device in common::graph_devices() {
            let source = Synthetic(device.clone());
            let mut t = trainer(&device);
            let mut epochs_seen = Vec::new();
            let (end, reports) = Fit::new(6)
                .schedule(Schedule::Exponential { gamma: 0.5 })
                .on_epoch(|r| {
                    epochs_seen.push(r.epoch);
                    Ok(())
                })
                .run(&mut t, &source, Some(&source))
                .unwrap();
            assert_eq!(end, FitEnd::Completed);
            assert_eq!(epochs_seen, [1, 2, 3, 4, 5, 6]);
            assert!(reports[5].train_loss < reports[0].train_loss, "{reports:?}");
            assert!((t.learning_rate() - 1e-2 * 0.5f64.powi(6)).abs() < 1e-12);
            assert!(reports[5].validation.unwrap().1 > 0.5);

            let mut t = trainer(&device);
            let fit = Fit::new(10);
            let handle = fit.stop_handle();
            let mut steps = 0;
            let (end, _) = fit
                .on_step(|_, _| {
                    steps += 1;
                    if steps == 3 {
                        handle.stop();
                    }
                })
                .run(&mut t, &source, None)
                .unwrap();
            assert_eq!((end, steps), (FitEnd::Stopped, 3));

            let mut t = trainer(&device);
            t.set_learning_rate(0.0).unwrap(); // nothing improves: early stopping fires
            let (end, reports) = Fit::new(50)
                .early_stopping(EarlyStopping::new(2, 0.0))
                .run(&mut t, &source, None)
                .unwrap();
            assert_eq!(end, FitEnd::EarlyStopped);
            assert!(reports.len() <= 4, "{}", reports.len());
        }
    }
}

#[test]
fn missing_or_corrupt_data_files_say_where_they_looked() {
    let error = ferrometal::data::Mnist::load("/nonexistent/mnist").unwrap_err();
    assert!(matches!(error, Error::Io(_)), "{error}");
    assert!(
        error
            .message()
            .contains("/nonexistent/mnist/train-images-idx3-ubyte.gz"),
        "{error}"
    );
    let dir = std::env::temp_dir().join(format!("ferrometal-bad-mnist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), b"not gzip").unwrap();
    let error = ferrometal::data::Mnist::load(&dir).unwrap_err();
    assert!(error.message().contains("not a valid gzip"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_weight_initialiser_is_seeded_and_reproducible() {
    use ferrometal::nn::WeightInit;
    for device in common::graph_devices() {
        for init in [
            WeightInit::HeUniform,
            WeightInit::HeNormal,
            WeightInit::XavierUniform,
            WeightInit::XavierNormal,
            WeightInit::Uniform,
            WeightInit::Zeros,
        ] {
            let mut layer = ferrometal::Layer::new(ferrometal::LayerKind::Dense);
            layer.units = 20;
            layer.init = init;
            let model = Model::builder([30]).layer(layer).build().unwrap();
            let weights = |seed| {
                Trainer::new(&device, &model, &Optimizer::sgd(0.1), Loss::Mse, seed)
                    .unwrap()
                    .read_state("dense0.weight")
                    .unwrap()
            };
            let (a, b, c) = (weights(1), weights(1), weights(2));
            assert_eq!(a, b, "{init:?}: the same seed gives the same weights");
            if init == WeightInit::Zeros {
                assert!(a.iter().all(|&w| w == 0.0));
                continue;
            }
            assert_ne!(a, c, "{init:?}: another seed gives other weights");
            let bound = match init {
                WeightInit::HeUniform => (6.0f32 / 30.0).sqrt(),
                WeightInit::XavierUniform => (6.0f32 / 50.0).sqrt(),
                WeightInit::Uniform => 1.0,
                _ => f32::INFINITY,
            };
            assert!(
                a.iter().all(|w| w.abs() <= bound),
                "{init:?} exceeds {bound}"
            );
            let std = (a.iter().map(|w| w * w).sum::<f32>() / a.len() as f32).sqrt();
            let expected = match init {
                WeightInit::HeNormal => (2.0f32 / 30.0).sqrt(),
                WeightInit::XavierNormal => (2.0f32 / 50.0).sqrt(),
                _ => bound / 3f32.sqrt(),
            };
            assert!(
                (std - expected).abs() < 0.1 * expected,
                "{init:?}: std {std}, expected {expected}"
            );
        }
    }
}
