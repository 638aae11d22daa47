//! Decimal amounts (`"199.65"`, as Shopify sends them) to minor units.

/// ISO 4217 currencies with no minor unit.
const ZERO_DECIMALS: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];
/// ISO 4217 currencies with three decimals.
const THREE_DECIMALS: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

/// Digits after the decimal point in `currency`'s minor unit.
pub fn exponent(currency: &str) -> u32 {
    if ZERO_DECIMALS.contains(&currency) {
        0
    } else if THREE_DECIMALS.contains(&currency) {
        3
    } else {
        2
    }
}

/// `amount` (a non-negative decimal string) in minor units of `currency`.
/// Exact: more decimals than the currency has is an error, not a rounding.
pub fn to_minor_units(amount: &str, currency: &str) -> Result<i64, String> {
    let invalid = || format!("must be a non-negative decimal amount in {currency}");
    let exponent = exponent(currency);
    let (whole, fraction) = amount.split_once('.').unwrap_or((amount, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 15 || !digits(whole) || !digits(fraction) {
        return Err(invalid());
    }
    // Trailing zeros carry nothing ("199.000" in USD is fine).
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > exponent as usize {
        return Err(format!(
            "has more than {exponent} decimals, the minor unit of {currency}"
        ));
    }
    let scale = 10i64.pow(exponent);
    let whole: i64 = whole.parse().map_err(|_| invalid())?;
    let fraction_value: i64 = if fraction.is_empty() {
        0
    } else {
        let padded = format!("{fraction:0<width$}", width = exponent as usize);
        padded.parse().map_err(|_| invalid())?
    };
    whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(fraction_value))
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_convert_exactly_per_currency_exponent() {
        assert_eq!(to_minor_units("199.65", "USD"), Ok(19_965));
        assert_eq!(to_minor_units("199.6", "USD"), Ok(19_960));
        assert_eq!(to_minor_units("199", "USD"), Ok(19_900));
        assert_eq!(to_minor_units("199.000", "USD"), Ok(19_900));
        assert_eq!(to_minor_units("1500", "JPY"), Ok(1_500));
        assert_eq!(to_minor_units("1.234", "KWD"), Ok(1_234));
        assert_eq!(to_minor_units("0.00", "EUR"), Ok(0));
    }

    #[test]
    fn malformed_or_too_precise_amounts_are_refused() {
        for bad in [
            "",
            "-1.00",
            "1.2.3",
            "1,00",
            "abc",
            ".5",
            "1.999",
            "9999999999999999",
        ] {
            assert!(to_minor_units(bad, "USD").is_err(), "{bad}");
        }
        assert!(to_minor_units("1.5", "JPY").is_err());
    }
}
