//! The merchant's customer ids and their dense ids, both ways, packed.
//!
//! A map of `String` to `u32` plus a `Vec<Option<Box<str>>>` cost about 86
//! bytes a customer (two allocations, a 32-byte slot); at ten million
//! customers that was most of the process. Here every name lives once in
//! one byte arena, a dense id finds its name through an 8-byte span, and
//! the name-to-dense table holds only the 4-byte dense id, hashed by the
//! name it points at: about 22 bytes a customer, 34 with the room the
//! arena and the table keep to grow (339 MB at ten million).

use std::hash::BuildHasher;

use hashbrown::HashTable;

/// No name for this dense id (never given, or the customer was deleted).
const NONE: u64 = u64::MAX;
impl std::fmt::Debug for CustomerIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerIds")
            .field("live", &self.len())
            .field("dense_ids", &self.spans.len())
            .finish()
    }
}

/// Bits of a span that hold the name's length.
const LEN_BITS: u32 = 24;

#[derive(Default)]
pub struct CustomerIds {
    /// The names, back to back, in the order they were inserted. A deleted
    /// customer's name stays until the arena is rebuilt at the next start.
    arena: Vec<u8>,
    /// Per dense id: offset in `arena` << LEN_BITS | length, or `NONE`.
    spans: Vec<u64>,
    /// Dense ids of live customers, found by the hash of their name.
    table: HashTable<u32>,
    hasher: std::collections::hash_map::RandomState,
}

impl CustomerIds {
    pub fn new() -> Self {
        CustomerIds::default()
    }

    /// Room for `additional` more customers.
    pub fn reserve(&mut self, additional: usize) {
        let hasher = &self.hasher;
        let (arena, spans) = (&self.arena, &self.spans);
        self.table.reserve(additional, |&dense| {
            hasher.hash_one(name_at(arena, spans, dense))
        });
    }

    /// The number of live customers.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The dense id of a live customer.
    pub fn get(&self, customer_id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(customer_id);
        self.table
            .find(hash, |&dense| self.name(dense) == Some(customer_id))
            .copied()
    }

    pub fn contains(&self, customer_id: &str) -> bool {
        self.get(customer_id).is_some()
    }

    /// The merchant's id of a live dense id.
    pub fn name(&self, dense: u32) -> Option<&str> {
        match self.spans.get(dense as usize) {
            Some(&span) if span != NONE => Some(name_at(&self.arena, &self.spans, dense)),
            _ => None,
        }
    }

    /// Gives `customer_id` the dense id `dense`, replacing whatever either
    /// had before. Ids longer than 16 MiB are refused long before here.
    pub fn insert(&mut self, customer_id: &str, dense: u32) {
        if let Some(name) = self.name(dense)
            && name != customer_id
        {
            let name = name.to_owned();
            self.remove_dense(&name, dense);
        }
        let offset = self.arena.len() as u64;
        self.arena.extend_from_slice(customer_id.as_bytes());
        if self.spans.len() <= dense as usize {
            self.spans.resize(dense as usize + 1, NONE);
        }
        self.spans[dense as usize] = offset << LEN_BITS | customer_id.len() as u64;
        // One probe finds the name's entry or the slot for it (a start
        // inserts ten million of them).
        let hash = self.hasher.hash_one(customer_id);
        let (arena, spans, hasher) = (&self.arena, &self.spans, &self.hasher);
        let entry = self.table.entry(
            hash,
            |&d| name_at(arena, spans, d) == customer_id,
            |&d| hasher.hash_one(name_at(arena, spans, d)),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut entry) => {
                let old = std::mem::replace(entry.get_mut(), dense);
                if old != dense {
                    self.spans[old as usize] = NONE;
                }
            }
            hashbrown::hash_table::Entry::Vacant(entry) => {
                entry.insert(dense);
            }
        }
    }

    /// Forgets a customer; returns its dense id.
    pub fn remove(&mut self, customer_id: &str) -> Option<u32> {
        let dense = self.get(customer_id)?;
        self.remove_dense(customer_id, dense);
        Some(dense)
    }

    /// Forgets whatever name a dense id has (a customer deleted since its
    /// name was stored); a live customer of the same name keeps its own.
    pub fn remove_dense_id(&mut self, dense: u32) {
        if let Some(name) = self.name(dense).map(str::to_owned) {
            self.remove_dense(&name, dense);
        }
    }

    fn remove_dense(&mut self, customer_id: &str, dense: u32) {
        let hash = self.hasher.hash_one(customer_id);
        if let Ok(entry) = self.table.find_entry(hash, |&d| d == dense) {
            entry.remove();
        }
        self.spans[dense as usize] = NONE;
    }

    /// Bytes held, for logs.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.spans.capacity() * 8 + self.table.capacity() * 5
    }
}

/// The name of `dense`, whose span is set.
fn name_at<'a>(arena: &'a [u8], spans: &[u64], dense: u32) -> &'a str {
    let span = spans[dense as usize];
    let (offset, len) = (
        (span >> LEN_BITS) as usize,
        (span & ((1 << LEN_BITS) - 1)) as usize,
    );
    // Only whole `&str`s are copied in, at span boundaries.
    std::str::from_utf8(&arena[offset..offset + len]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        Forget(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), 0u32..300).prop_map(|(n, d)| Op::Insert(n, d)),
            any::<u8>().prop_map(Op::Remove),
            (0u32..300).prop_map(Op::Forget),
        ]
    }

    proptest! {
        /// Agrees with a pair of std maps after any inserts and removes.
        #[test]
        fn behaves_like_two_maps(ops in proptest::collection::vec(op(), 0..400)) {
            let mut ids = CustomerIds::new();
            let mut by_name: HashMap<String, u32> = HashMap::new();
            let mut by_dense: HashMap<u32, String> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(n, dense) => {
                        let name = format!("customer-{n}");
                        if let Some(old) = by_name.remove(&name) {
                            by_dense.remove(&old);
                        }
                        if let Some(other) = by_dense.remove(&dense) {
                            by_name.remove(&other);
                        }
                        by_name.insert(name.clone(), dense);
                        by_dense.insert(dense, name.clone());
                        ids.insert(&name, dense);
                    }
                    Op::Remove(n) => {
                        let name = format!("customer-{n}");
                        let expected = by_name.remove(&name);
                        if let Some(dense) = expected {
                            by_dense.remove(&dense);
                        }
                        prop_assert_eq!(ids.remove(&name), expected);
                    }
                    Op::Forget(dense) => {
                        if let Some(name) = by_dense.remove(&dense) {
                            by_name.remove(&name);
                        }
                        ids.remove_dense_id(dense);
                    }
                }
                prop_assert_eq!(ids.len(), by_name.len());
            }
            for n in 0..=255u8 {
                let name = format!("customer-{n}");
                prop_assert_eq!(ids.get(&name), by_name.get(&name).copied());
            }
            for dense in 0..300 {
                prop_assert_eq!(ids.name(dense), by_dense.get(&dense).map(String::as_str));
            }
        }
    }

    #[test]
    fn names_of_any_utf8_round_trip() {
        let mut ids = CustomerIds::new();
        ids.reserve(3);
        ids.insert("ünïcødé-顧客", 2);
        ids.insert("", 0);
        assert_eq!(ids.get("ünïcødé-顧客"), Some(2));
        assert_eq!(ids.name(2), Some("ünïcødé-顧客"));
        assert_eq!(ids.name(0), Some(""));
        assert_eq!(ids.name(1), None);
        assert_eq!(ids.name(99), None);
    }
}
