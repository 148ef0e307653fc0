//! Bit-sliced indexes: a number per customer kept as one bitmap per bit
//! (O'Neil and Quass, 1997), so that a comparison over every customer costs a
//! few bitmap operations per bit, whatever the number of distinct values.
//!
//! Bit `n` of a customer's value is set when the customer is in
//! `BitmapKey::Slice(attr, n)`. Customers without a value are in no slice;
//! the caller says which customers have one (`base`).

use roaring::RoaringBitmap;

use super::TenantIndex;
use crate::rule::{Comparison, NumberTest};
use crate::store::keys::{BitmapKey, NumberAttr};

/// Bits kept per value.
pub const BITS: u8 = 64;

/// The customers of `base` whose value of `attr` passes `test`.
///
/// `Ne` is answered over `base` only; the caller decides what a missing
/// value means for it.
pub fn select(
    index: &TenantIndex,
    attr: NumberAttr,
    base: &RoaringBitmap,
    test: NumberTest,
) -> RoaringBitmap {
    let slices: Vec<&RoaringBitmap> = (0..BITS)
        .map(|bit| index.bitmap(&BitmapKey::Slice(attr, bit)))
        .collect();
    match test {
        NumberTest::Compare(comparison, value) => compare(&slices, base, comparison, value),
        NumberTest::Between(low, high) => {
            let mut result = compare(&slices, base, Comparison::Ge, low);
            if !result.is_empty() {
                result &= compare(&slices, &result, Comparison::Le, high);
            }
            result
        }
    }
}

/// The customers of `base` whose value compares to `value` as asked.
pub fn compare(
    slices: &[&RoaringBitmap],
    base: &RoaringBitmap,
    comparison: Comparison,
    value: u64,
) -> RoaringBitmap {
    let width = slices
        .iter()
        .rposition(|slice| !slice.is_empty())
        .map_or(0, |top| top + 1);

    // Only the sides the comparison reads are accumulated.
    let want_less = matches!(comparison, Comparison::Ne | Comparison::Lt | Comparison::Le);
    let want_greater = matches!(comparison, Comparison::Ne | Comparison::Gt | Comparison::Ge);
    // Every stored value is below 2^width: a larger `value` exceeds them all.
    let (less, equal, greater) = if width < 64 && value >> width != 0 {
        (base.clone(), RoaringBitmap::new(), RoaringBitmap::new())
    } else {
        let mut less = RoaringBitmap::new();
        let mut greater = RoaringBitmap::new();
        let mut equal = base.clone();
        for bit in (0..width).rev() {
            if equal.is_empty() {
                break;
            }
            let slice = slices[bit];
            if value >> bit & 1 == 1 {
                if want_less {
                    less |= &equal - slice;
                }
                equal &= slice;
            } else {
                if want_greater {
                    greater |= &equal & slice;
                }
                equal -= slice;
            }
        }
        (less, equal, greater)
    };

    match comparison {
        Comparison::Eq => equal,
        Comparison::Ne => less | greater,
        Comparison::Lt => less,
        Comparison::Le => less | equal,
        Comparison::Gt => greater,
        Comparison::Ge => greater | equal,
    }
}

/// The slice bits to flip to change a value from `old` to `new`: each
/// `(bit, on)` pair says whether the customer joins or leaves slice `bit`.
pub fn slice_changes(old: u64, new: u64) -> impl Iterator<Item = (u8, bool)> {
    let differ = old ^ new;
    (0..BITS)
        .filter(move |bit| differ >> bit & 1 == 1)
        .map(move |bit| (bit, new >> bit & 1 == 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds slices from plain values, independently of the write path.
    fn slices_of(values: &[(u32, u64)]) -> Vec<RoaringBitmap> {
        let mut slices = vec![RoaringBitmap::new(); BITS as usize];
        for &(id, value) in values {
            for (bit, slice) in slices.iter_mut().enumerate() {
                if value >> bit & 1 == 1 {
                    slice.insert(id);
                }
            }
        }
        slices
    }

    fn naive(values: &[(u32, u64)], comparison: Comparison, c: u64) -> RoaringBitmap {
        values
            .iter()
            .filter(|(_, v)| match comparison {
                Comparison::Eq => *v == c,
                Comparison::Ne => *v != c,
                Comparison::Lt => *v < c,
                Comparison::Le => *v <= c,
                Comparison::Gt => *v > c,
                Comparison::Ge => *v >= c,
            })
            .map(|(id, _)| *id)
            .collect()
    }

    fn comparison() -> impl Strategy<Value = Comparison> {
        prop_oneof![
            Just(Comparison::Eq),
            Just(Comparison::Ne),
            Just(Comparison::Lt),
            Just(Comparison::Le),
            Just(Comparison::Gt),
            Just(Comparison::Ge),
        ]
    }

    fn value() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..50,
            0u64..100_000,
            any::<u64>(),
            Just(u64::MAX),
            Just(0)
        ]
    }

    proptest! {
        #[test]
        fn compare_matches_a_plain_scan(
            raw in proptest::collection::btree_map(0u32..5000, value(), 0..200),
            comparison in comparison(),
            c in value(),
        ) {
            let values: Vec<(u32, u64)> = raw.into_iter().collect();
            let owned = slices_of(&values);
            let slices: Vec<&RoaringBitmap> = owned.iter().collect();
            let base: RoaringBitmap = values.iter().map(|(id, _)| *id).collect();
            prop_assert_eq!(compare(&slices, &base, comparison, c), naive(&values, comparison, c));
        }
    }

    #[test]
    fn a_bound_above_every_stored_bit_counts_everyone_as_less() {
        let owned = slices_of(&[(1, 3), (2, 0)]);
        let slices: Vec<&RoaringBitmap> = owned.iter().collect();
        let base: RoaringBitmap = [1, 2].into_iter().collect();
        assert_eq!(compare(&slices, &base, Comparison::Lt, 1 << 40).len(), 2);
        assert!(compare(&slices, &base, Comparison::Ge, 1 << 40).is_empty());
    }

    #[test]
    fn slice_changes_flip_exactly_the_differing_bits() {
        let flips: Vec<(u8, bool)> = slice_changes(0b1010, 0b0110).collect();
        assert_eq!(flips, vec![(2, true), (3, false)]);
    }
}
