//! Results computed once per key and kept, bounded so that open-ended keys (the hosts of
//! egress requests) cannot grow it without limit: when full, it starts over.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, RwLock};

const LIMIT: usize = 4096;

pub struct Cache<K, V> {
    map: RwLock<HashMap<K, Arc<V>>>,
}

impl<K: Hash + Eq, V> Default for Cache<K, V> {
    fn default() -> Self {
        Cache {
            map: RwLock::default(),
        }
    }
}

impl<K: Hash + Eq, V> Cache<K, V> {
    /// The value for `key`, computed by `make` the first time.
    pub fn get_or_make(&self, key: K, make: impl FnOnce() -> V) -> Arc<V> {
        if let Some(value) = self.map.read().unwrap().get(&key) {
            return value.clone();
        }
        let value = Arc::new(make());
        let mut map = self.map.write().unwrap();
        if map.len() >= LIMIT {
            map.clear();
        }
        map.insert(key, value.clone());
        value
    }
}
