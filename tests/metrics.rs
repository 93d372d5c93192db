//! Metrics against values worked out by hand (and, where noted, what
//! scikit-learn gives for the same inputs).

use ferrometal::metrics::{Accuracy, AucRoc, Average, ConfusionMatrix, Regression, TopK};

#[test]
fn accuracy_and_top_k() {
    let scores = [
        0.1, 0.7, 0.2, /**/ 0.5, 0.3, 0.2, /**/ 0.2, 0.3, 0.5, /**/ 0.4, 0.35, 0.25,
    ];
    let labels = [1, 1, 2, 1];
    let mut accuracy = Accuracy::default();
    accuracy.update(&scores, 3, &labels).unwrap();
    assert_eq!(accuracy.compute(), 0.5);
    let mut top2 = TopK::new(2);
    top2.update(&scores, 3, &labels).unwrap();
    assert_eq!(top2.compute(), 1.0);
    let mut top1 = TopK::new(1);
    top1.update(&scores, 3, &labels).unwrap();
    assert_eq!(top1.compute(), accuracy.compute());
    accuracy.reset();
    assert_eq!(accuracy.compute(), 0.0);
}

#[test]
fn precision_recall_f1_macro_and_micro() {
    // sklearn: y_true=[0,0,1,1,2,2,2], y_pred=[0,1,1,1,2,0,2]
    //   precision_score(average='macro') = 0.7222..., recall macro = 0.7222...,
    //   f1 macro = 0.7111..., micro everything = 5/7.
    let mut matrix = ConfusionMatrix::new(3);
    matrix
        .update(&[0, 1, 1, 1, 2, 0, 2], &[0, 0, 1, 1, 2, 2, 2])
        .unwrap();
    assert_eq!(matrix.get(2, 0), 1);
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    close(
        matrix.precision(Average::Macro),
        (0.5 + 2.0 / 3.0 + 1.0) / 3.0,
    );
    close(matrix.recall(Average::Macro), (0.5 + 1.0 + 2.0 / 3.0) / 3.0);
    let f1 = |p: f64, r: f64| 2.0 * p * r / (p + r);
    close(
        matrix.f1(Average::Macro),
        (f1(0.5, 0.5) + f1(2.0 / 3.0, 1.0) + f1(1.0, 2.0 / 3.0)) / 3.0,
    );
    close(matrix.precision(Average::Micro), 5.0 / 7.0);
    close(matrix.f1(Average::Micro), 5.0 / 7.0);
}

#[test]
fn auc_roc_with_ties() {
    // sklearn roc_auc_score([0,0,1,1], [0.1,0.4,0.35,0.8]) = 0.75
    let mut auc = AucRoc::default();
    auc.update(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true])
        .unwrap();
    assert_eq!(auc.compute(), Some(0.75));
    // A tie between a positive and a negative counts half: [0,1] with equal scores.
    let mut tie = AucRoc::default();
    tie.update(&[0.5, 0.5], &[false, true]).unwrap();
    assert_eq!(tie.compute(), Some(0.5));
    let mut one_class = AucRoc::default();
    one_class.update(&[0.2], &[true]).unwrap();
    assert_eq!(one_class.compute(), None);
}

#[test]
fn regression_errors() {
    // predictions [2.5, 0, 2, 8] for targets [3, -0.5, 2, 7]:
    // MAE 0.5, MSE 0.375, R² = 0.9486081370449679 (sklearn r2_score).
    let mut r = Regression::default();
    r.update(&[2.5, 0.0, 2.0, 8.0], &[3.0, -0.5, 2.0, 7.0])
        .unwrap();
    assert!((r.mae() - 0.5).abs() < 1e-12);
    assert!((r.mse() - 0.375).abs() < 1e-12);
    assert!((r.rmse() - 0.375f64.sqrt()).abs() < 1e-12);
    assert!((r.r2() - 0.9486081370449679).abs() < 1e-9, "{}", r.r2());
}

#[test]
fn batches_that_do_not_fit_are_errors_and_add_nothing() {
    use ferrometal::Error;
    let mut accuracy = Accuracy::default();
    let error = accuracy.update(&[0.1, 0.9], 0, &[1]).unwrap_err();
    assert!(
        matches!(error, Error::InvalidArgument(_)) && error.message().contains("'classes' is 0"),
        "{error}"
    );
    let error = accuracy.update(&[0.1, 0.9, 0.3], 2, &[1, 0]).unwrap_err();
    assert!(
        matches!(error, Error::ShapeMismatch(_))
            && error.message().contains("3 scores for 2 labels"),
        "{error}"
    );
    assert!(accuracy.update_predictions(&[1, 2], &[1]).is_err());
    assert_eq!(accuracy.compute(), 0.0);
    accuracy.update(&[0.1, 0.9], 2, &[-1]).unwrap(); // a negative label is just wrong
    assert_eq!(accuracy.compute(), 0.0);
    assert!(TopK::new(1).update(&[], 0, &[]).is_err());
    assert!(ConfusionMatrix::new(2).update(&[0], &[0, 1]).is_err());
    assert_eq!(ConfusionMatrix::new(2).get(5, 0), 0);
    assert!(AucRoc::default().update(&[0.5], &[]).is_err());
    assert!(Regression::default().update(&[1.0], &[1.0, 2.0]).is_err());
}
