//! Exact money and quantity arithmetic.
//!
//! Every amount in ratingd is a [`Decimal`]; no float ever holds money or a quantity. This module
//! owns the three operations the rest of the engine may use on money:
//! - [`exact_mul`]: a product that is exact or an error, never silently rounded;
//! - [`round_quotient`]: `numerator / denominator` rounded once to [`RECORD_SCALE`] places,
//!   half-even, computed in integers so the result is the correctly rounded exact quotient;
//! - [`InvoiceRounding::apply`]: the currency rounding of an invoice amount.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Decimal places of every rated record's charge (SPEC section 3).
pub const RECORD_SCALE: u32 = 9;

/// Most fractional digits a usage quantity or a tariff price may carry (SPEC section 2).
pub const MAX_INPUT_SCALE: u32 = 9;

/// An arithmetic step could not be carried out exactly within 96-bit decimal precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("amount exceeds exact decimal precision")]
pub struct Inexact;

/// `a * b`, exact or [`Inexact`].
///
/// rust_decimal rounds a product whose digits do not fit; billing must never do that quietly, so
/// the scale of the result is checked against the sum of the operands' scales.
pub fn exact_mul(a: Decimal, b: Decimal) -> Result<Decimal, Inexact> {
    let (a, b) = if a.scale() + b.scale() > 28 {
        (a.normalize(), b.normalize())
    } else {
        (a, b)
    };
    let product = a.checked_mul(b).ok_or(Inexact)?;
    if product.scale() != a.scale() + b.scale() && !product.is_zero() {
        return Err(Inexact);
    }
    Ok(product)
}

/// `a + b`, exact or [`Inexact`] (an addition only loses digits near the 96-bit limit).
pub fn exact_add(a: Decimal, b: Decimal) -> Result<Decimal, Inexact> {
    let mut sum = a.checked_add(b).ok_or(Inexact)?;
    if sum.is_zero() {
        // A difference of equal amounts is +0, never the "-0" rust_decimal can produce.
        sum.set_sign_positive(true);
    } else if sum.scale() < a.scale().max(b.scale()) {
        return Err(Inexact);
    }
    Ok(sum)
}

/// `a - b`, exact or [`Inexact`].
pub fn exact_sub(a: Decimal, b: Decimal) -> Result<Decimal, Inexact> {
    exact_add(a, -b)
}

/// `numerator / denominator` rounded once, half-even, to [`RECORD_SCALE`] places.
///
/// Computed with integer division and the remainder, so the rounding decision is made on the exact
/// quotient (a decimal division would first round at 28 digits and could round twice).
///
/// ```
/// use ratingd::domain::money::round_quotient;
/// use rust_decimal::Decimal;
///
/// // A 61-second call at 0.02 per minute plus a 0.01 connect fee: (61 x 0.02 + 0.6) / 60.
/// let charge = round_quotient("1.82".parse::<Decimal>().unwrap(), 60).unwrap();
/// assert_eq!(charge.to_string(), "0.030333333");
/// // Ties go to the even digit.
/// assert_eq!(round_quotient("0.0000000025".parse().unwrap(), 1).unwrap().to_string(), "0.000000002");
/// ```
pub fn round_quotient(numerator: Decimal, denominator: u32) -> Result<Decimal, Inexact> {
    assert!(denominator > 0, "denominators come from validated tariffs and are >= 1");
    let mantissa = numerator.mantissa();
    let scale = numerator.scale();
    // value * 10^9 = mantissa * 10^(9 - scale) / denominator
    let (dividend, divisor) = if scale <= RECORD_SCALE {
        let lift = 10i128.pow(RECORD_SCALE - scale);
        (mantissa.checked_mul(lift).ok_or(Inexact)?, i128::from(denominator))
    } else {
        let drop = 10i128.pow(scale - RECORD_SCALE);
        (mantissa, drop.checked_mul(i128::from(denominator)).ok_or(Inexact)?)
    };
    // Most charges fit 64 bits, where division is several times cheaper than in 128.
    let (mut quotient, remainder) = match (i64::try_from(dividend), i64::try_from(divisor)) {
        (Ok(n), Ok(d)) => (i128::from(n / d), i128::from((n % d).abs())),
        _ => (dividend / divisor, (dividend % divisor).abs()),
    };
    let twice = remainder * 2;
    let away = twice > divisor || (twice == divisor && quotient % 2 != 0);
    if away {
        quotient += dividend.signum();
    }
    let mut rounded = Decimal::try_from_i128_with_scale(quotient, RECORD_SCALE).map_err(|_| Inexact)?;
    if rounded.is_zero() {
        rounded.set_sign_positive(true);
    }
    Ok(rounded)
}

/// The multiplier of a percentage discount: `1 - percent / 100`, exact.
pub fn discount_factor(percent: Decimal) -> Result<Decimal, Inexact> {
    exact_sub(Decimal::ONE, exact_mul(percent, Decimal::new(1, 2))?)
}

/// `ceil(value / step)` for `value >= 0` and `step > 0`, exact: both are brought to a common
/// scale and divided as integers (a decimal division would round at 28 digits first).
pub fn ceil_div(value: Decimal, step: Decimal) -> Result<Decimal, Inexact> {
    debug_assert!(step > Decimal::ZERO && value >= Decimal::ZERO);
    let scale = value.scale().max(step.scale());
    let lift = |d: Decimal| d.mantissa().checked_mul(10i128.pow(scale - d.scale())).ok_or(Inexact);
    let (a, b) = (lift(value)?, lift(step)?);
    let k = a / b + i128::from(a % b != 0);
    Decimal::try_from_i128_with_scale(k, 0).map_err(|_| Inexact)
}

/// How an invoice amount is rounded to the currency's places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoundingMode {
    /// Nearest; a tie goes away from zero (commercial rounding).
    HalfUp,
    /// Nearest; a tie goes to the even digit (banker's rounding).
    HalfEven,
    /// Away from zero whenever anything is dropped.
    Up,
    /// Toward zero: the dropped digits are discarded.
    Down,
}

impl RoundingMode {
    pub fn strategy(self) -> RoundingStrategy {
        match self {
            RoundingMode::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
            RoundingMode::Up => RoundingStrategy::AwayFromZero,
            RoundingMode::Down => RoundingStrategy::ToZero,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoundingMode::HalfUp => "half-up",
            RoundingMode::HalfEven => "half-even",
            RoundingMode::Up => "up",
            RoundingMode::Down => "down",
        }
    }
}

impl fmt::Display for RoundingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plan's invoice rounding: the currency's places and the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InvoiceRounding {
    pub places: u32,
    pub mode: RoundingMode,
}

impl InvoiceRounding {
    /// The invoice amount of an exact total: rounded once, with exactly `places` decimals.
    ///
    /// ```
    /// use ratingd::domain::money::{InvoiceRounding, RoundingMode};
    ///
    /// let total = "0.125000000".parse().unwrap();
    /// let half_up = InvoiceRounding { places: 2, mode: RoundingMode::HalfUp };
    /// let half_even = InvoiceRounding { places: 2, mode: RoundingMode::HalfEven };
    /// assert_eq!(half_up.apply(total).to_string(), "0.13");
    /// assert_eq!(half_even.apply(total).to_string(), "0.12");
    /// ```
    pub fn apply(self, total: Decimal) -> Decimal {
        let mut amount = total.round_dp_with_strategy(self.places, self.mode.strategy());
        amount.rescale(self.places);
        amount
    }
}

/// A three-letter ISO 4217-style currency code, validated as uppercase ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn as_str(&self) -> &str {
        // Invariant: built only from three ASCII uppercase letters in `from_str`.
        std::str::from_utf8(&self.0).expect("currency codes are ASCII")
    }

    /// The ISO 4217 minor unit (decimal places of the smallest coin: EUR 2, JPY 0, KWD 3), or
    /// `None` for codes without one (gold, SDR).
    pub fn minor_unit(&self) -> Option<u32> {
        iso_currency::Currency::from_code(self.as_str())
            .and_then(|c| c.exponent())
            .map(u32::from)
    }
}

impl FromStr for Currency {
    type Err = String;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(format!("currency must be 3 uppercase letters, got {code:?}"));
        }
        if iso_currency::Currency::from_code(code).is_none() {
            return Err(format!("{code:?} is not an ISO 4217 currency code"));
        }
        Ok(Currency([bytes[0], bytes[1], bytes[2]]))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Parses a decimal written by a person or an agent: plain digits with an optional sign and point,
/// at most [`MAX_INPUT_SCALE`] fractional digits; no exponent, no float syntax.
pub fn parse_exact(text: &str) -> Result<Decimal, String> {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let mut parts = body.splitn(2, '.');
    let int_part = parts.next().unwrap_or("");
    let frac_part = parts.next();
    let digits_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok(int_part) || frac_part.is_some_and(|f| !digits_ok(f)) {
        return Err(format!("{text:?} is not a plain decimal number"));
    }
    if frac_part.map_or(0, str::len) > MAX_INPUT_SCALE as usize {
        return Err(format!("{text:?} has more than {MAX_INPUT_SCALE} fractional digits"));
    }
    Decimal::from_str_exact(text).map_err(|_| format!("{text:?} is out of the decimal range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn quotient_rounds_half_even_on_the_exact_value() {
        assert_eq!(round_quotient(dec!(1.22), 60).unwrap(), dec!(0.020333333));
        assert_eq!(round_quotient(dec!(0.0000000025), 1).unwrap(), dec!(0.000000002));
        assert_eq!(round_quotient(dec!(0.0000000035), 1).unwrap(), dec!(0.000000004));
        assert_eq!(round_quotient(dec!(-0.0000000035), 1).unwrap(), dec!(-0.000000004));
        assert_eq!(round_quotient(dec!(2), 3).unwrap(), dec!(0.666666667));
        assert_eq!(round_quotient(dec!(5), 1).unwrap().scale(), RECORD_SCALE);
        assert_eq!(
            round_quotient(dec!(-0.0000000001), 1).unwrap().to_string(),
            "0.000000000"
        );
        assert_eq!(
            exact_sub(dec!(0.000000000), dec!(0.000000000)).unwrap().to_string(),
            "0.000000000"
        );
    }

    #[test]
    fn multiplication_refuses_to_lose_digits() {
        assert_eq!(exact_mul(dec!(1.5), dec!(0.02)).unwrap(), dec!(0.030));
        let huge = Decimal::from_i128_with_scale(10i128.pow(27), 9);
        assert_eq!(exact_mul(huge, dec!(0.123456789)), Err(Inexact));
    }

    #[test]
    fn invoice_rounding_modes() {
        let r = |mode| InvoiceRounding { places: 2, mode };
        assert_eq!(r(RoundingMode::HalfUp).apply(dec!(1.005)), dec!(1.01));
        assert_eq!(r(RoundingMode::HalfEven).apply(dec!(1.005)), dec!(1.00));
        assert_eq!(r(RoundingMode::HalfEven).apply(dec!(1.015)), dec!(1.02));
        assert_eq!(r(RoundingMode::Up).apply(dec!(1.001)), dec!(1.01));
        assert_eq!(r(RoundingMode::Down).apply(dec!(1.009)), dec!(1.00));
        assert_eq!(r(RoundingMode::Down).apply(dec!(3)).to_string(), "3.00");
    }

    #[test]
    fn currencies_are_three_uppercase_letters() {
        assert!("EUR".parse::<Currency>().is_ok());
        for bad in ["eur", "EURO", "E1R", "", "XYZ"] {
            assert!(bad.parse::<Currency>().is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_parsing_refuses_floats_and_excess_digits() {
        assert_eq!(parse_exact("61").unwrap(), dec!(61));
        assert_eq!(parse_exact("0.000000001").unwrap(), dec!(0.000000001));
        for bad in ["1e3", "0.0000000001", "1.", ".5", "", "abc", "1,5", "NaN"] {
            assert!(parse_exact(bad).is_err(), "{bad}");
        }
    }
}
