//! Index keys, value comparison and query cursors.
//!
//! An index key is a type tag byte followed by an order-preserving encoding
//! of the value, so redb's byte order over keys is the query order:
//! * numbers: [`TAG_NUMBER`] + the f64 bits, sign-flipped, big-endian, so
//!   they sort numerically (integers beyond 2^53 round to the nearest f64);
//! * strings: [`TAG_STRING`] + the first [`MAX_INDEXED_STRING_BYTES`] bytes
//!   of the UTF-8, so they sort bytewise.
//!
//! Both encodings are monotone (a <= b implies key(a) <= key(b)) but not
//! injective, so an index scan over a key range finds a superset of the
//! matches and every candidate is re-checked with [`compare`] on the real
//! value.

use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::{MAX_FIELD_PATH_BYTES, MAX_ID_BYTES, MAX_INDEXED_STRING_BYTES, RecordError};

/// First byte of a number's index key; numbers sort before strings.
pub(super) const TAG_NUMBER: u8 = 0x10;
/// First byte of a string's index key.
pub(super) const TAG_STRING: u8 = 0x20;

/// The index key of `value`, or `None` for types indexes do not hold
/// (null, booleans, arrays, objects).
pub(super) fn index_key(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::Number(n) => {
            let mut key = Vec::with_capacity(9);
            key.push(TAG_NUMBER);
            key.extend_from_slice(&ordered_f64(n.as_f64()?));
            Some(key)
        }
        Value::String(s) => {
            let bytes = &s.as_bytes()[..s.len().min(MAX_INDEXED_STRING_BYTES)];
            let mut key = Vec::with_capacity(1 + bytes.len());
            key.push(TAG_STRING);
            key.extend_from_slice(bytes);
            Some(key)
        }
        _ => None,
    }
}

/// Big-endian bytes whose order is the numeric order of `f` (finite; -0 = 0).
fn ordered_f64(f: f64) -> [u8; 8] {
    let f = if f == 0.0 { 0.0 } else { f };
    let bits = f.to_bits();
    let ordered = if bits >> 63 == 1 { !bits } else { bits | 1 << 63 };
    ordered.to_be_bytes()
}

/// Orders two values of the same kind: numbers exactly (integers as
/// integers, even beyond 2^53), strings bytewise. `None` for any other pair,
/// which no condition matches.
pub(super) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => Some(compare_numbers(a, b)),
        (Value::String(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        _ => None,
    }
}

fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    let int = |n: &Number| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    // Without serde_json's arbitrary precision every number is an i64, a
    // u64 or a finite f64, so `as_f64` always succeeds.
    let float = |n: &Number| n.as_f64().unwrap_or(0.0);
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(x), None) => int_vs_float(x, float(b)),
        (None, Some(y)) => int_vs_float(y, float(a)).reverse(),
        (None, None) => float(a).partial_cmp(&float(b)).unwrap_or(Ordering::Equal),
    }
}

/// Exact comparison of an integer within ±2^64 and a finite float.
fn int_vs_float(i: i128, f: f64) -> Ordering {
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    if f >= TWO_POW_64 {
        return Ordering::Less;
    }
    if f < -TWO_POW_64 {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    // |whole| < 2^64 and integral, so the cast is exact.
    match i.cmp(&(whole as i128)) {
        Ordering::Equal => whole.partial_cmp(&f).unwrap_or(Ordering::Equal),
        other => other,
    }
}

/// Where the next page starts: the first entry the previous page did not
/// examine (included in the next page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cursor {
    /// A scan of the collection in id order.
    Scan { id: String },
    /// A walk of the index on `field`.
    Index { field: String, key: Vec<u8>, id: String },
}

/// First byte of every cursor; bump it when the layout changes so old
/// cursors are refused rather than misread.
const CURSOR_FORMAT: u8 = 1;
const KIND_SCAN: u8 = 0;
const KIND_INDEX: u8 = 1;
/// Longest cursor accepted, in hex characters: format, kind, two lengths
/// and the longest field, index key and id.
const MAX_CURSOR_CHARS: usize = 2 * (2 + 4 + MAX_FIELD_PATH_BYTES + 1 + MAX_INDEXED_STRING_BYTES + MAX_ID_BYTES);

impl Cursor {
    /// Hex of: format, kind, then for an index cursor u16 lengths with the
    /// field and key, then the id.
    pub(super) fn encode(&self) -> String {
        let mut out = vec![CURSOR_FORMAT];
        match self {
            Cursor::Scan { id } => {
                out.push(KIND_SCAN);
                out.extend_from_slice(id.as_bytes());
            }
            Cursor::Index { field, key, id } => {
                out.push(KIND_INDEX);
                for part in [field.as_bytes(), key] {
                    out.extend_from_slice(&(part.len() as u16).to_be_bytes());
                    out.extend_from_slice(part);
                }
                out.extend_from_slice(id.as_bytes());
            }
        }
        hex::encode(out)
    }

    pub(super) fn decode(text: &str) -> Result<Cursor, RecordError> {
        if text.len() > MAX_CURSOR_CHARS {
            return Err(RecordError::InvalidCursor);
        }
        let bytes = hex::decode(text).map_err(|_| RecordError::InvalidCursor)?;
        let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| RecordError::InvalidCursor);
        match bytes.as_slice() {
            [CURSOR_FORMAT, KIND_SCAN, id @ ..] => Ok(Cursor::Scan { id: utf8(id)? }),
            [CURSOR_FORMAT, KIND_INDEX, rest @ ..] => {
                let (field, rest) = split_part(rest)?;
                let (key, id) = split_part(rest)?;
                Ok(Cursor::Index { field: utf8(field)?, key: key.to_vec(), id: utf8(id)? })
            }
            _ => Err(RecordError::InvalidCursor),
        }
    }
}

fn split_part(bytes: &[u8]) -> Result<(&[u8], &[u8]), RecordError> {
    let [a, b, rest @ ..] = bytes else { return Err(RecordError::InvalidCursor) };
    let len = u16::from_be_bytes([*a, *b]) as usize;
    if rest.len() < len {
        return Err(RecordError::InvalidCursor);
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn number_keys_sort_numerically() {
        let values = [
            json!(-1e300),
            json!(i64::MIN),
            json!(-2.5),
            json!(-1),
            json!(-0.0),
            json!(0),
            json!(1e-300),
            json!(0.5),
            json!(1),
            json!(2),
            json!(10),
            json!(1e15),
            json!(u64::MAX),
            json!(1e300),
        ];
        for pair in values.windows(2) {
            let (a, b) = (index_key(&pair[0]).unwrap(), index_key(&pair[1]).unwrap());
            assert!(a <= b, "{} vs {}", pair[0], pair[1]);
            assert!(compare(&pair[0], &pair[1]).unwrap().is_le(), "{} vs {}", pair[0], pair[1]);
        }
        assert_eq!(index_key(&json!(-0.0)), index_key(&json!(0)));
        assert_eq!(compare(&json!(1), &json!(1.0)), Some(Ordering::Equal));
    }

    #[test]
    fn big_integers_compare_exactly_although_their_keys_collide() {
        let (a, b) = (json!(9_007_199_254_740_993u64), json!(9_007_199_254_740_992u64));
        assert_eq!(index_key(&a), index_key(&b));
        assert_eq!(compare(&a, &b), Some(Ordering::Greater));
        assert_eq!(compare(&a, &json!(9_007_199_254_740_992.0)), Some(Ordering::Greater));
        assert_eq!(compare(&json!(-3), &json!(-3.5)), Some(Ordering::Greater));
        assert_eq!(compare(&json!(3), &json!(3.5)), Some(Ordering::Less));
        assert_eq!(compare(&json!(u64::MAX), &json!(1e300)), Some(Ordering::Less));
        assert_eq!(compare(&json!(i64::MIN), &json!(-1e300)), Some(Ordering::Greater));
    }

    #[test]
    fn strings_sort_bytewise_after_numbers_and_long_ones_are_cut() {
        let keys: Vec<_> = [json!(1e300), json!(""), json!("A"), json!("a"), json!("ab"), json!("b"), json!("é")]
            .iter()
            .map(|v| index_key(v).unwrap())
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        let long = "x".repeat(MAX_INDEXED_STRING_BYTES);
        let (a, b) = (json!(format!("{long}a")), json!(format!("{long}b")));
        assert_eq!(index_key(&a), index_key(&b));
        assert_eq!(index_key(&a).unwrap().len(), 1 + MAX_INDEXED_STRING_BYTES);
        assert_eq!(compare(&a, &b), Some(Ordering::Less));
        assert_eq!(index_key(&json!(true)), None);
        assert_eq!(compare(&json!("1"), &json!(1)), None);
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let long_id = "i".repeat(MAX_ID_BYTES);
        for c in [
            Cursor::Scan { id: "a/b".into() },
            Cursor::Index { field: "contact.email".into(), key: index_key(&json!("é")).unwrap(), id: "7".into() },
            Cursor::Index {
                field: "f".repeat(MAX_FIELD_PATH_BYTES),
                key: index_key(&json!("s".repeat(1000))).unwrap(),
                id: long_id,
            },
        ] {
            assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }
        for bad in ["", "zz", "01", "0201", "0101ffff", &"00".repeat(MAX_CURSOR_CHARS)] {
            assert!(matches!(Cursor::decode(bad), Err(RecordError::InvalidCursor)), "{bad}");
        }
    }
}
