use proptest::prelude::*;

use super::*;
use crate::test_util::decimal;

fn d(s: &str) -> Decimal {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn parses_quantities_exactly() {
    assert_eq!(d("1"), Decimal::new(1, 0).unwrap());
    assert_eq!(d("500m"), Decimal::new(5, -1).unwrap());
    assert_eq!(d("1.5"), Decimal::new(15, -1).unwrap());
    assert_eq!(d("1500m"), d("1.5"));
    assert_eq!(d("95"), Decimal::from_i64(95));
    assert_eq!(d("1k"), Decimal::from_i64(1000));
    assert_eq!(d("1Ki"), Decimal::from_i64(1024));
    assert_eq!(d("0.5Ki"), Decimal::from_i64(512));
    assert_eq!(d("2e3"), Decimal::from_i64(2000));
    assert_eq!(d("25E-2"), Decimal::new(25, -2).unwrap());
    assert_eq!(d("10u"), Decimal::new(1, -5).unwrap());
    assert_eq!(d("-5"), Decimal::from_i64(-5));
    assert_eq!(d("0"), Decimal::ZERO);
    assert_eq!(d("000m"), Decimal::ZERO);
}

#[test]
fn rejects_malformed_quantities() {
    for bad in [
        "", "abc", "1x", "1.2.3", "m", "--1", "1e", "1ee3", "1 k", "1Ki2",
    ] {
        assert!(
            bad.parse::<Decimal>().is_err(),
            "{bad:?} should be rejected"
        );
    }
    assert!(matches!(
        "1e99".parse::<Decimal>(),
        Err(DecimalError::Overflow(_))
    ));
}

#[test]
fn prints_in_quantity_syntax() {
    assert_eq!(d("500m").to_string(), "500m");
    assert_eq!(d("1.5").to_string(), "1500m");
    assert_eq!(d("95").to_string(), "95");
    assert_eq!(d("1Ki").to_string(), "1024");
    assert_eq!(d("10u").to_string(), "10u");
    assert_eq!(d("3n").to_string(), "3n");
    assert_eq!(Decimal::new(25, -12).unwrap().to_string(), "25e-12");
}

#[test]
fn one_and_500m_scale_to_two_to_one() {
    // The SDK's UnscaledBig conversion turns these into 1 and 500: the ratio inverted.
    assert_eq!(integer_weights(&[d("1"), d("500m")]), Some(vec![1000, 500]));
    assert_eq!(integer_weights(&[d("95"), d("5")]), Some(vec![95, 5]));
    assert_eq!(
        integer_weights(&[d("1.5"), d("250m"), d("0")]),
        Some(vec![1500, 250, 0])
    );
    assert_eq!(
        integer_weights(&[d("10m"), d("100m"), d("1500m")]),
        Some(vec![10, 100, 1500])
    );
    assert_eq!(integer_weights(&[d("10u"), d("1")]), Some(vec![1, 100_000]));
    assert_eq!(
        integer_weights(&[d("90"), d("10")]),
        Some(vec![90, 10]),
        "whole weights stay as written"
    );
}

#[test]
fn weights_too_large_for_u32_are_scaled_proportionally() {
    assert_eq!(fit_u32(&[90, 10]), [9, 1]);
    assert_eq!(
        fit_u32(&[3_000_000_000, 3_000_000_000, 1]),
        [499_999, 499_999, 1]
    );
    assert_eq!(fit_u32(&[0, 5]), [0, 1]);
}

#[test]
fn data_plane_weights_keep_the_ratio_in_lowest_terms() {
    assert_eq!(data_plane_weights(&[d("1"), d("500m")]), Some(vec![2, 1]));
    assert_eq!(
        data_plane_weights(&[d("90"), d("10"), d("0")]),
        Some(vec![9, 1, 0])
    );
}

#[test]
fn orders_by_value() {
    assert!(d("500m") < d("1"));
    assert!(d("-1") < d("0"));
    assert!(d("1Ki") > d("1k"));
    assert_eq!(d("1").cmp(&d("1000m")), std::cmp::Ordering::Equal);
}

#[test]
fn quantity_reads_strings_and_numbers() {
    let q: Quantity = serde_json::from_value(serde_json::json!("500m")).unwrap();
    assert_eq!(q.0, d("500m"));
    let q: Quantity = serde_json::from_value(serde_json::json!(95)).unwrap();
    assert_eq!(q.0, d("95"));
    let q: Quantity = serde_json::from_value(serde_json::json!(1.5)).unwrap();
    assert_eq!(q.0, d("1.5"));
    assert_eq!(
        serde_json::to_value(Quantity(d("95"))).unwrap(),
        serde_json::json!("95")
    );
    let err = serde_json::from_value::<Quantity>(serde_json::json!("lots")).unwrap_err();
    assert!(
        err.to_string().contains("invalid quantity \"lots\""),
        "{err}"
    );
}

#[test]
fn number_keeps_fractions_for_validation() {
    let n: Number = serde_json::from_value(serde_json::json!(2.5)).unwrap();
    assert_eq!(n.0, d("2.5"));
    let n: Number = serde_json::from_value(serde_json::json!(-3)).unwrap();
    assert!(n.0.is_negative());
    assert_eq!(
        serde_json::to_value(Number(d("90"))).unwrap(),
        serde_json::json!(90)
    );
    assert!(serde_json::from_value::<Number>(serde_json::json!("90")).is_err());
}

proptest! {
    #[test]
    fn display_parses_back_to_the_same_value(x in decimal()) {
        prop_assert_eq!(x.to_string().parse::<Decimal>().unwrap(), x);
    }

    #[test]
    fn integer_scaling_preserves_every_ratio(ws in proptest::collection::vec(decimal(), 1..6)) {
        let ints = integer_weights(&ws).unwrap();
        for i in 0..ws.len() {
            for j in 0..ws.len() {
                // w_i / w_j == n_i / n_j  ⇔  w_i · n_j == w_j · n_i, checked in exact arithmetic.
                let lhs = ws[i].scaled_integer(9).unwrap() * i128::from(ints[j]);
                let rhs = ws[j].scaled_integer(9).unwrap() * i128::from(ints[i]);
                prop_assert_eq!(lhs, rhs);
            }
        }
    }
}
