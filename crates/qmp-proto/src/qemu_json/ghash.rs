//! Which argument QEMU calls "unexpected".
//!
//! QEMU's argument visitor copies an object's keys into a GLib hash table,
//! removes each key as the command's declared members are visited, and
//! then reports the first key left, in the table's slot order, as
//! `Parameter '...' is unexpected`. To name the same key, this module
//! models that table: GLib's string hash, its start slot
//! (`hash * 11 % prime`), triangular probing, tombstones, and its growing
//! and shrinking with in-place rehashing.

/// GLib's prime moduli, by table shift.
const PRIME_MOD: [u32; 32] = [
    1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
    262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213, 33554393, 67108859, 134217689,
    268435399, 536870909, 1073741789, 2147483647,
];
const MIN_SHIFT: u32 = 3;
const UNUSED: u32 = 0;
const TOMBSTONE: u32 = 1;

fn is_real(h: u32) -> bool {
    h >= 2
}

/// GLib's `g_str_hash` (djb2 over signed chars) on a key as QEMU stores it.
fn str_hash(key: &[u8]) -> u32 {
    let mut h: u32 = 5381;
    for &b in key {
        h = (h << 5).wrapping_add(h).wrapping_add(b as i8 as i32 as u32);
    }
    if is_real(h) {
        h
    } else {
        2
    }
}

/// Modified UTF-8, as QEMU holds strings: U+0000 is C0 80.
fn qemu_bytes(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len());
    for c in key.chars() {
        if c == '\0' {
            out.extend_from_slice(&[0xC0, 0x80]);
        } else {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}

/// A model of a GLib hash table used as a set of strings.
pub(crate) struct GHashSet {
    shift: u32,
    hashes: Vec<u32>,
    keys: Vec<Option<Vec<u8>>>,
    nnodes: usize,
    noccupied: usize,
}

impl GHashSet {
    pub(crate) fn new() -> Self {
        let mut t = GHashSet {
            shift: 0,
            hashes: Vec::new(),
            keys: Vec::new(),
            nnodes: 0,
            noccupied: 0,
        };
        t.shift = MIN_SHIFT;
        t.hashes = vec![UNUSED; t.size()];
        t.keys = vec![None; t.size()];
        t
    }

    fn size(&self) -> usize {
        1 << self.shift
    }

    fn mask(&self) -> usize {
        self.size() - 1
    }

    fn index_of(&self, hash: u32) -> usize {
        (hash.wrapping_mul(11) % PRIME_MOD[self.shift as usize]) as usize
    }

    /// The slot holding `key`, or where it would go.
    fn lookup(&self, key: &[u8], hash: u32) -> usize {
        let mut i = self.index_of(hash);
        let mut step = 0;
        let mut tombstone = None;
        while self.hashes[i] != UNUSED {
            if self.hashes[i] == hash && self.keys[i].as_deref() == Some(key) {
                return i;
            }
            if self.hashes[i] == TOMBSTONE && tombstone.is_none() {
                tombstone = Some(i);
            }
            step += 1;
            i = (i + step) & self.mask();
        }
        tombstone.unwrap_or(i)
    }

    pub(crate) fn insert(&mut self, key: &str) {
        let key = qemu_bytes(key);
        let hash = str_hash(&key);
        let i = self.lookup(&key, hash);
        let old = self.hashes[i];
        if is_real(old) {
            return;
        }
        self.hashes[i] = hash;
        self.keys[i] = Some(key);
        self.nnodes += 1;
        if old == UNUSED {
            self.noccupied += 1;
            self.maybe_resize();
        }
    }

    pub(crate) fn remove(&mut self, key: &str) {
        let key = qemu_bytes(key);
        let hash = str_hash(&key);
        let i = self.lookup(&key, hash);
        if !is_real(self.hashes[i]) {
            return;
        }
        self.hashes[i] = TOMBSTONE;
        self.keys[i] = None;
        self.nnodes -= 1;
        self.maybe_resize();
    }

    /// The key in the lowest occupied slot.
    pub(crate) fn first(&self) -> Option<&[u8]> {
        (0..self.size())
            .find(|&i| is_real(self.hashes[i]))
            .and_then(|i| self.keys[i].as_deref())
    }

    fn maybe_resize(&mut self) {
        let size = self.size();
        if (size > self.nnodes * 4 && size > 1 << MIN_SHIFT)
            || size <= self.noccupied + self.noccupied / 16
        {
            self.resize();
        }
    }

    /// GLib's in-place rehash: entries move in slot order, evicting what
    /// stands where they land, which then moves next.
    fn resize(&mut self) {
        let old_size = self.size();
        let wanted = (self.nnodes as f64 * 1.333) as u64;
        let bits = 64 - wanted.leading_zeros();
        self.shift = bits.max(MIN_SHIFT);
        let new_size = self.size();
        if new_size > old_size {
            self.hashes.resize(new_size, UNUSED);
            self.keys.resize(new_size, None);
        }
        let mut moved = vec![false; new_size.max(old_size)];
        for i in 0..old_size {
            let mut hash = self.hashes[i];
            if !is_real(hash) {
                self.hashes[i] = UNUSED;
                self.keys[i] = None;
                continue;
            }
            if moved[i] {
                continue;
            }
            self.hashes[i] = UNUSED;
            let mut key = self.keys[i].take();
            loop {
                let mut j = self.index_of(hash);
                let mut step = 0;
                while moved[j] {
                    step += 1;
                    j = (j + step) & self.mask();
                }
                moved[j] = true;
                let replaced = std::mem::replace(&mut self.hashes[j], hash);
                let replaced_key = std::mem::replace(&mut self.keys[j], key);
                if !is_real(replaced) {
                    break;
                }
                hash = replaced;
                key = replaced_key;
            }
        }
        if new_size < old_size {
            self.hashes.truncate(new_size);
            self.keys.truncate(new_size);
        }
        self.noccupied = self.nnodes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_left(insert: &[&str], remove: &[&str]) -> String {
        let mut t = GHashSet::new();
        for k in insert {
            t.insert(k);
        }
        for k in remove {
            t.remove(k);
        }
        String::from_utf8(t.first().unwrap_or_default().to_vec()).unwrap()
    }

    #[test]
    fn small_tables_match_qemu() {
        // keys inserted in QDict order (a, zz, b): QEMU names 'b'
        assert_eq!(first_left(&["a", "zz", "b"], &[]), "b");
    }

    #[test]
    fn growing_and_shrinking_keep_every_key() {
        let keys: Vec<String> = (0..100).map(|i| format!("key{i}")).collect();
        let mut t = GHashSet::new();
        for k in &keys {
            t.insert(k);
        }
        assert_eq!(t.nnodes, 100);
        for k in &keys[..99] {
            t.remove(k);
        }
        assert_eq!(t.first(), Some(&b"key99"[..]));
        assert!(t.size() < 64, "shrank");
    }
}
