//! A k-way merge of sorted entry streams, in storage order.
//!
//! Compaction and snapshot scans read several sources (memtables, SSTs) and
//! need one stream in `(table, key, event_ts desc, seq desc)` order. Every
//! row version lives in exactly one source, so there are no duplicates to
//! resolve; an error from any source ends the stream with that error.

use crate::types::Entry;
use crate::Result;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A boxed source of entries in storage order.
pub(crate) type Source<'a> = Box<dyn Iterator<Item = Result<Entry>> + Send + 'a>;

struct Head {
    entry: Entry,
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    // BinaryHeap is a max-heap; reverse so the smallest entry pops first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .entry
            .cmp_order(&self.entry)
            .then_with(|| other.source.cmp(&self.source))
    }
}

/// Merges sources into one stream in storage order.
pub(crate) struct MergeIter<'a> {
    sources: Vec<Source<'a>>,
    heap: BinaryHeap<Head>,
    pending_error: Option<crate::Error>,
    primed: bool,
}

impl<'a> MergeIter<'a> {
    pub(crate) fn new(sources: Vec<Source<'a>>) -> Self {
        MergeIter {
            heap: BinaryHeap::with_capacity(sources.len()),
            sources,
            pending_error: None,
            primed: false,
        }
    }

    fn pull(&mut self, source: usize) {
        match self.sources[source].next() {
            Some(Ok(entry)) => self.heap.push(Head { entry, source }),
            Some(Err(e)) if self.pending_error.is_none() => self.pending_error = Some(e),
            Some(Err(_)) => {}
            None => {}
        }
    }
}

impl Iterator for MergeIter<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        if !self.primed {
            self.primed = true;
            for i in 0..self.sources.len() {
                self.pull(i);
            }
        }
        if let Some(e) = self.pending_error.take() {
            self.heap.clear();
            return Some(Err(e));
        }
        let head = self.heap.pop()?;
        self.pull(head.source);
        Some(Ok(head.entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Kind;
    use bytes::Bytes;

    fn e(key: &str, event_ts: i64, seq: u64) -> Result<Entry> {
        Ok(Entry {
            table: 1,
            key: Bytes::copy_from_slice(key.as_bytes()),
            event_ts,
            seq,
            ingest_ts: 0,
            kind: Kind::Put,
            value: Bytes::new(),
        })
    }

    #[test]
    fn merges_in_storage_order() {
        let a: Source = Box::new(vec![e("a", 5, 1), e("b", 9, 2)].into_iter());
        let b: Source = Box::new(vec![e("a", 7, 3), e("a", 5, 0), e("c", 1, 4)].into_iter());
        let got: Vec<_> = MergeIter::new(vec![a, b])
            .map(|r| r.map(|x| (x.key, x.event_ts, x.seq)))
            .collect::<Result<_>>()
            .unwrap_or_default();
        let keys: Vec<_> = got
            .iter()
            .map(|(k, e, s)| (k.as_ref().to_vec(), *e, *s))
            .collect();
        assert_eq!(
            keys,
            vec![
                (b"a".to_vec(), 7, 3),
                (b"a".to_vec(), 5, 1),
                (b"a".to_vec(), 5, 0),
                (b"b".to_vec(), 9, 2),
                (b"c".to_vec(), 1, 4),
            ]
        );
    }
}
