//! Conflict-free numeric operations (`tx.add/sub/max/min`): the writer applies them
//! at commit against the key's current value, so they record no read and never
//! conflict. Values are `i64` or `u256`; the arithmetic runs on signed 257-bit
//! integers (sign and 256-bit magnitude), so every operand, bound and result of
//! either type is exact, and a result outside the type's range is `ERR_BOUNDS`.

use std::cmp::Ordering;

use crate::codec::Value;
use crate::error::{Code, Error, Result};

/// A signed integer of up to 256 bits of magnitude. Zero is never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int {
    /// Whether the value is below zero.
    pub neg: bool,
    /// The magnitude, big-endian.
    pub mag: [u8; 32],
}

impl Int {
    /// Zero.
    pub const ZERO: Int = Int {
        neg: false,
        mag: [0; 32],
    };

    /// Builds a value, normalising a negative zero.
    pub fn new(neg: bool, mag: [u8; 32]) -> Int {
        Int {
            neg: neg && mag != [0; 32],
            mag,
        }
    }

    /// The value of an `i64`.
    pub fn from_i64(v: i64) -> Int {
        let mut mag = [0u8; 32];
        mag[24..].copy_from_slice(&v.unsigned_abs().to_be_bytes());
        Int::new(v < 0, mag)
    }

    /// The `i64` this is, if it fits.
    pub fn to_i64(self) -> Option<i64> {
        if self.mag[..24] != [0; 24] {
            return None;
        }
        let m = u64::from_be_bytes(self.mag[24..].try_into().unwrap());
        if self.neg {
            if m <= 1 << 63 {
                Some((m as i64).wrapping_neg())
            } else {
                None
            }
        } else {
            i64::try_from(m).ok()
        }
    }

    fn cmp_mag(a: &[u8; 32], b: &[u8; 32]) -> Ordering {
        a.cmp(b)
    }

    /// `a + b` on magnitudes; `None` past 2^256 - 1.
    fn add_mag(a: &[u8; 32], b: &[u8; 32]) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        let mut carry = 0u16;
        for i in (0..32).rev() {
            let s = a[i] as u16 + b[i] as u16 + carry;
            out[i] = s as u8;
            carry = s >> 8;
        }
        (carry == 0).then_some(out)
    }

    /// `a - b` on magnitudes, `a >= b`.
    fn sub_mag(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let mut d = a[i] as i16 - b[i] as i16 - borrow;
            borrow = 0;
            if d < 0 {
                d += 256;
                borrow = 1;
            }
            out[i] = d as u8;
        }
        out
    }

    /// `self + other`; `None` when the magnitude passes 2^256 - 1.
    pub fn checked_add(self, other: Int) -> Option<Int> {
        if self.neg == other.neg {
            return Int::add_mag(&self.mag, &other.mag).map(|m| Int::new(self.neg, m));
        }
        Some(match Int::cmp_mag(&self.mag, &other.mag) {
            Ordering::Less => Int::new(other.neg, Int::sub_mag(&other.mag, &self.mag)),
            _ => Int::new(self.neg, Int::sub_mag(&self.mag, &other.mag)),
        })
    }

    /// `-self`.
    pub fn negate(self) -> Int {
        Int::new(!self.neg, self.mag)
    }
}

impl PartialOrd for Int {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Int {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.neg, other.neg) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => Int::cmp_mag(&self.mag, &other.mag),
            (true, true) => Int::cmp_mag(&other.mag, &self.mag),
        }
    }
}

impl std::fmt::Display for Int {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Decimal by repeated division of the magnitude by 10.
        let mut mag = self.mag;
        let mut digits = Vec::new();
        loop {
            let mut rem = 0u16;
            for b in mag.iter_mut() {
                let cur = (rem << 8) | *b as u16;
                *b = (cur / 10) as u8;
                rem = cur % 10;
            }
            digits.push(b'0' + rem as u8);
            if mag == [0; 32] {
                break;
            }
        }
        if self.neg {
            digits.push(b'-');
        }
        digits.reverse();
        f.write_str(std::str::from_utf8(&digits).unwrap())
    }
}

/// Which operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericKind {
    /// current + operand
    Add = 1,
    /// current - operand
    Sub = 2,
    /// max(current, operand)
    Max = 3,
    /// min(current, operand)
    Min = 4,
}

impl NumericKind {
    /// The kind stored as byte `b`.
    pub fn from_u8(b: u8) -> Result<Self> {
        Ok(match b {
            1 => NumericKind::Add,
            2 => NumericKind::Sub,
            3 => NumericKind::Max,
            4 => NumericKind::Min,
            other => return Err(Error::invalid(format!("unknown numeric op {other}"))),
        })
    }
    fn name(self) -> &'static str {
        match self {
            NumericKind::Add => "add",
            NumericKind::Sub => "sub",
            NumericKind::Max => "max",
            NumericKind::Min => "min",
        }
    }
}

/// The value type an operation works in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericType {
    /// The stored value's type; `i64` for a missing key.
    Follow = 0,
    /// Signed 64-bit.
    I64 = 1,
    /// Unsigned 256-bit.
    U256 = 2,
}

impl NumericType {
    /// The type stored as byte `b`.
    pub fn from_u8(b: u8) -> Result<Self> {
        Ok(match b {
            0 => NumericType::Follow,
            1 => NumericType::I64,
            2 => NumericType::U256,
            other => return Err(Error::invalid(format!("unknown numeric type {other}"))),
        })
    }
}

/// One operation's arguments (the key is the batch's business).
#[derive(Debug, Clone, Copy)]
pub struct NumericArgs {
    /// Which operation.
    pub kind: NumericKind,
    /// The type asked for.
    pub ty: NumericType,
    /// The delta (add/sub) or the other operand (max/min).
    pub operand: Int,
    /// The result must be at least this.
    pub min: Option<Int>,
    /// The result must be at most this.
    pub max: Option<Int>,
}

fn bounds(message: String) -> Error {
    Error::new(Code::Bounds, message)
}

/// Applies `args` to `current` (the key's value, `None` when absent) and returns
/// the new value, or `ERR_BOUNDS` when the result leaves the type's range or the
/// bounds, or the stored value is not of the type asked for.
pub fn apply(key: &str, current: Option<&Value>, args: &NumericArgs) -> Result<Value> {
    let (ty, cur) = match (current, args.ty) {
        (None, NumericType::U256) => (NumericType::U256, Int::ZERO),
        (None, _) => (NumericType::I64, Int::ZERO),
        (Some(Value::I64(v)), NumericType::Follow | NumericType::I64) => {
            (NumericType::I64, Int::from_i64(*v))
        }
        (Some(Value::U256(m)), NumericType::Follow | NumericType::U256) => {
            (NumericType::U256, Int::new(false, *m))
        }
        (Some(v), want) => {
            let wanted = match want {
                NumericType::U256 => "u256",
                NumericType::I64 => "i64",
                NumericType::Follow => "i64 or u256",
            };
            return Err(bounds(format!(
                "{} on key {key:?}: it holds {}, not {wanted}; numeric ops work on i64 and u256 values",
                args.kind.name(),
                v.type_name()
            )));
        }
    };
    let next = match args.kind {
        NumericKind::Add => cur.checked_add(args.operand),
        NumericKind::Sub => cur.checked_add(args.operand.negate()),
        NumericKind::Max => Some(cur.max(args.operand)),
        NumericKind::Min => Some(cur.min(args.operand)),
    };
    let out_of_type = || {
        bounds(format!(
            "{} {} on key {key:?} (now {cur}) leaves the {} range",
            args.kind.name(),
            args.operand,
            if ty == NumericType::U256 {
                "u256"
            } else {
                "i64"
            }
        ))
    };
    let next = next.ok_or_else(out_of_type)?;
    if let Some(min) = args.min {
        if next < min {
            return Err(bounds(format!(
                "{} {} on key {key:?} (now {cur}) would make it {next}, below its minimum {min}",
                args.kind.name(),
                args.operand
            )));
        }
    }
    if let Some(max) = args.max {
        if next > max {
            return Err(bounds(format!(
                "{} {} on key {key:?} (now {cur}) would make it {next}, above its maximum {max}",
                args.kind.name(),
                args.operand
            )));
        }
    }
    match ty {
        NumericType::U256 if next.neg => Err(out_of_type()),
        NumericType::U256 => Ok(Value::U256(next.mag)),
        _ => next.to_i64().map(Value::I64).ok_or_else(out_of_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn args(kind: NumericKind, d: i64) -> NumericArgs {
        NumericArgs {
            kind,
            ty: NumericType::Follow,
            operand: Int::from_i64(d),
            min: None,
            max: None,
        }
    }

    proptest! {
        #[test]
        fn i64_ops_match_checked_arithmetic(a in any::<i64>(), d in any::<i64>()) {
            let cur = Value::I64(a);
            let add = apply("k", Some(&cur), &args(NumericKind::Add, d)).ok();
            prop_assert_eq!(add, a.checked_add(d).map(Value::I64));
            let sub = apply("k", Some(&cur), &args(NumericKind::Sub, d)).ok();
            prop_assert_eq!(sub, a.checked_sub(d).map(Value::I64));
            prop_assert_eq!(apply("k", Some(&cur), &args(NumericKind::Max, d)).unwrap(), Value::I64(a.max(d)));
            prop_assert_eq!(apply("k", Some(&cur), &args(NumericKind::Min, d)).unwrap(), Value::I64(a.min(d)));
            prop_assert_eq!(Int::from_i64(a).to_i64(), Some(a));
            prop_assert_eq!(Int::from_i64(a).to_string(), a.to_string());
            prop_assert_eq!(Int::from_i64(a).cmp(&Int::from_i64(d)), a.cmp(&d));
        }
    }

    #[test]
    fn u256_wraps_nowhere_and_bounds_hold() {
        let top = Value::U256([0xff; 32]);
        let one = NumericArgs {
            kind: NumericKind::Add,
            ty: NumericType::U256,
            operand: Int::from_i64(1),
            min: None,
            max: None,
        };
        assert_eq!(apply("k", Some(&top), &one).unwrap_err().code, Code::Bounds);
        let sub = NumericArgs {
            kind: NumericKind::Sub,
            ..one
        };
        assert_eq!(apply("k", None, &sub).unwrap_err().code, Code::Bounds);
        let mut two = [0u8; 32];
        two[31] = 2;
        assert_eq!(
            apply("k", Some(&Value::U256(two)), &sub).unwrap(),
            Value::U256({
                let mut o = [0u8; 32];
                o[31] = 1;
                o
            })
        );
        let bounded = NumericArgs {
            min: Some(Int::from_i64(0)),
            ..args(NumericKind::Sub, 5)
        };
        assert_eq!(
            apply("k", Some(&Value::I64(4)), &bounded).unwrap_err().code,
            Code::Bounds
        );
        assert_eq!(
            apply(
                "k",
                Some(&Value::String("x".into())),
                &args(NumericKind::Add, 1)
            )
            .unwrap_err()
            .code,
            Code::Bounds
        );
    }
}
