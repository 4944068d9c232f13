//! Exact decimal weights: Kubernetes Quantities (v1alpha1) and plain numbers (v1alpha2+).
//!
//! Weights are relative, so the only thing that matters is the ratio between backends. Floating
//! point would perturb that ratio, and the upstream SDK's `UnscaledBig` conversion inverts it
//! (`1` → 1, `500m` → 500). Every weight here is an exact `mantissa × 10^exponent`.

use std::{cmp::Ordering, fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

#[cfg(test)]
mod tests;

/// An exact decimal number, `mantissa × 10^exponent`, kept normalised (no trailing zeros in the
/// mantissa, and zero is `0 × 10^0`) so that equal values compare equal.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    mantissa: i128,
    exponent: i32,
}

/// Why a Quantity or number could not be read as an exact weight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("invalid quantity {0:?}: expected a number with an optional suffix (m, k, Ki, e3, …)")]
    Syntax(String),
    #[error("quantity {0:?} is out of range")]
    Overflow(String),
}

/// The largest decimal exponent we accept in either direction. Quantities beyond 10^±30 are not
/// weights anyone means, and bounding the exponent keeps every scale computation in `i128`.
const MAX_EXPONENT: i32 = 30;

// === impl Decimal ===

impl Decimal {
    pub const ZERO: Decimal = Decimal {
        mantissa: 0,
        exponent: 0,
    };

    /// Builds `mantissa × 10^exponent`, normalised. Returns `None` when out of range.
    pub fn new(mantissa: i128, exponent: i32) -> Option<Self> {
        let mut d = Decimal { mantissa, exponent };
        if d.mantissa == 0 {
            return Some(Self::ZERO);
        }
        while d.mantissa % 10 == 0 {
            d.mantissa /= 10;
            d.exponent = d.exponent.checked_add(1)?;
        }
        if d.exponent.abs() > MAX_EXPONENT {
            // A large positive exponent with a small mantissa may still be fine once expanded,
            // but nothing we accept needs it; reject rather than risk overflow downstream.
            return None;
        }
        Some(d)
    }

    pub fn from_i64(v: i64) -> Self {
        // `new` only fails on huge exponents, and an i64 has at most 19 trailing zeros.
        Self::new(i128::from(v), 0).unwrap_or(Self::ZERO)
    }

    pub fn mantissa(self) -> i128 {
        self.mantissa
    }

    pub fn exponent(self) -> i32 {
        self.exponent
    }

    pub fn is_negative(self) -> bool {
        self.mantissa < 0
    }

    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    pub fn is_integer(self) -> bool {
        self.exponent >= 0
    }

    /// The value as an `i64`, when it is a whole number in range.
    pub fn to_i64(self) -> Option<i64> {
        if !self.is_integer() {
            return None;
        }
        let scale = 10i128.checked_pow(u32::try_from(self.exponent).ok()?)?;
        i64::try_from(self.mantissa.checked_mul(scale)?).ok()
    }

    /// The value scaled by `10^shift` as an integer, when that is exact and fits an `i128`.
    pub fn scaled_integer(self, shift: i32) -> Option<i128> {
        let e = self.exponent.checked_add(shift)?;
        if e < 0 {
            return None;
        }
        self.mantissa
            .checked_mul(10i128.checked_pow(u32::try_from(e).ok()?)?)
    }

    fn from_f64(v: f64) -> Option<Self> {
        if !v.is_finite() {
            return None;
        }
        // `Display` for f64 prints the shortest string that reads back as the same f64, so a
        // YAML `1.5` becomes exactly 1.5 rather than its binary approximation.
        parse_plain(&format!("{v}"))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.mantissa.signum() != other.mantissa.signum() {
            return self.mantissa.signum().cmp(&other.mantissa.signum());
        }
        let shift = self.exponent.min(other.exponent);
        match (self.scaled_integer(-shift), other.scaled_integer(-shift)) {
            (Some(a), Some(b)) => a.cmp(&b),
            // Only reachable for magnitudes near i128::MAX; compare by order of magnitude.
            _ => {
                let mag = |d: &Decimal| d.exponent + d.mantissa.unsigned_abs().ilog10() as i32;
                let c = mag(self).cmp(&mag(other));
                if self.mantissa < 0 { c.reverse() } else { c }
            }
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Parses a plain decimal: an optional sign, digits, an optional fraction, no suffix.
fn parse_plain(s: &str) -> Option<Decimal> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut mantissa: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(i128::from(b - b'0'))?;
    }
    let exponent = -i32::try_from(frac.len()).ok()?;
    Decimal::new(if neg { -mantissa } else { mantissa }, exponent)
}

/// Kubernetes Quantity syntax: `<number><suffix>` where suffix is binary (`Ki`…`Ei`), decimal SI
/// (`n u m "" k M G T P E`) or a decimal exponent (`e3`, `E-2`).
impl FromStr for Decimal {
    type Err = DecimalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || DecimalError::Syntax(s.to_string());
        let overflow = || DecimalError::Overflow(s.to_string());
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(t.len());
        let (number, suffix) = t.split_at(split);
        let base = parse_plain(number).ok_or_else(syntax)?;
        let (pow10, pow1024): (i32, u32) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 1),
            "Mi" => (0, 2),
            "Gi" => (0, 3),
            "Ti" => (0, 4),
            "Pi" => (0, 5),
            "Ei" => (0, 6),
            e if e.starts_with(['e', 'E']) => {
                let exp: i32 = e[1..].parse().map_err(|_| syntax())?;
                (exp, 0)
            }
            _ => return Err(syntax()),
        };
        let mantissa = base
            .mantissa
            .checked_mul(1024i128.checked_pow(pow1024).ok_or_else(overflow)?)
            .ok_or_else(overflow)?;
        let exponent = base.exponent.checked_add(pow10).ok_or_else(overflow)?;
        Decimal::new(mantissa, exponent).ok_or_else(overflow)
    }
}

/// Prints in Quantity syntax, choosing the suffix that keeps the value exact and short:
/// `95`, `500m`, `1500m`, `5u`, `25e-12`.
impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exponent >= 0 {
            if let Some(v) = self.scaled_integer(0) {
                return write!(f, "{v}");
            }
            return write!(f, "{}e{}", self.mantissa, self.exponent);
        }
        for (pow, suffix) in [(-3, "m"), (-6, "u"), (-9, "n")] {
            if self.exponent >= pow
                && let Some(v) = self.scaled_integer(-pow)
            {
                return write!(f, "{v}{suffix}");
            }
        }
        write!(f, "{}e{}", self.mantissa, self.exponent)
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A v1alpha1 weight: a Kubernetes `resource.Quantity`, given on the wire as a string (`"500m"`,
/// `"1"`) or a number (`95`, `1.5`). Serialised as a string, as the Go type does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Quantity(pub Decimal);

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as 95, \"500m\" or \"1.5\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                v.parse().map(Quantity).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(Decimal::from_i64(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Decimal::new(i128::from(v), 0)
                    .map(Quantity)
                    .ok_or_else(|| E::custom("quantity out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Decimal::from_f64(v)
                    .map(Quantity)
                    .ok_or_else(|| E::custom("quantity out of range"))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "description": "Relative weight as a Kubernetes quantity (1 = 1000m).",
        })
    }
}

/// A v1alpha2+ weight. The Go type is `int`, but the upstream CRD schema says `number`, so a
/// fractional or negative value can reach us; it is read exactly and rejected by validation
/// with a reason instead of failing to parse.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Number(pub Decimal);

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.to_i64() {
            Some(v) => s.serialize_i64(v),
            // Only invalid (fractional or huge) weights take this path; they are never served.
            None => {
                let f: f64 = self.0.to_string().parse().unwrap_or_else(|_| {
                    format!("{}e{}", self.0.mantissa, self.0.exponent)
                        .parse()
                        .unwrap_or(f64::NAN)
                });
                s.serialize_f64(f)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number(Decimal::from_i64(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Decimal::new(i128::from(v), 0)
                    .map(Number)
                    .ok_or_else(|| E::custom("number out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Decimal::from_f64(v)
                    .map(Number)
                    .ok_or_else(|| E::custom("number out of range"))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Number {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Number".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "number",
            "description": "Relative weight of this backend (a whole number ≥ 0; not a percentage).",
        })
    }
}

/// A canonical, version-free backend weight: an exact non-negative decimal once validated.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Weight(pub Decimal);

impl Serialize for Weight {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Quantity::deserialize(d).map(|q| Weight(q.0))
    }
}

/// Scales a set of exact weights to integers by one power of ten, so the ratio between them is
/// unchanged: `[1, 500m]` → `[1000, 500]`. Fractions are scaled to at least thousandths, so a
/// quantity written in millis reads back as those millis, the unit people wrote.
pub fn integer_weights(weights: &[Decimal]) -> Option<Vec<i64>> {
    let min = weights.iter().map(|w| w.exponent()).min().unwrap_or(0);
    let shift = if min < 0 { min.min(-3) } else { 0 };
    weights
        .iter()
        .map(|w| w.scaled_integer(-shift).and_then(|v| i64::try_from(v).ok()))
        .collect()
}

/// The weights a data plane is given: exact ratios as integers ([`integer_weights`]), reduced to
/// `u32` (`fit_u32`). `None` when the weights cannot be scaled to integers in range (validation
/// rejects such splits first).
pub fn data_plane_weights(weights: &[Decimal]) -> Option<Vec<u32>> {
    integer_weights(weights).map(|ints| fit_u32(&ints))
}

/// Reduces integer weights to `u32` for the data plane: exactly when they fit after dividing by
/// their common divisor, proportionally (to a total of 1,000,000, each nonzero weight ≥ 1)
/// otherwise.
fn fit_u32(ws: &[i64]) -> Vec<u32> {
    fn gcd(a: i64, b: i64) -> i64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let g = ws.iter().copied().fold(0, gcd).max(1);
    let reduced: Vec<i64> = ws.iter().map(|w| w / g).collect();
    let total: i128 = reduced.iter().map(|w| i128::from(*w)).sum();
    if total <= i128::from(u32::MAX) {
        return reduced
            .iter()
            .map(|w| u32::try_from(*w).unwrap_or(u32::MAX))
            .collect();
    }
    reduced
        .iter()
        .map(|w| {
            let scaled = i128::from(*w) * 1_000_000 / total;
            u32::try_from(scaled.max(i128::from(*w > 0))).unwrap_or(u32::MAX)
        })
        .collect()
}
