//! The row layout: where each feature's bytes are in a row written under a
//! given schema version of its group.
//!
//! A row written under schema version *v* holds one slot per feature that
//! existed at *v* (added at or before *v*, not removed by *v*), in feature
//! id order; deprecated features keep their slots. All integers and floats
//! are little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | row format version, [`ROW_FORMAT_VERSION`] |
//! | 1 | 4 | schema version *v*, u32 |
//! | 5 | ⌈slots / 8⌉ | null bitmap: slot *i* is bit *i % 8* of byte *i / 8*; set = has a value |
//! | 5 + B | F | fixed section: each fixed-width slot at a fixed offset, zero when null |
//! | 5 + B + F | 4 × V | var offsets: for each variable-length slot, u32 end of its bytes in the var data |
//! | 5 + B + F + 4V | … | var data: each variable-length value, back to back |
//!
//! Because every fixed-width slot has a fixed offset and every variable-length
//! slot a fixed position in the offsets table, a reader finds any feature
//! without looking at the others. A row's length is exactly the end of its
//! var data; anything else is corruption.
//!
//! A group has one layout per schema version where its feature set changed;
//! versions that only changed descriptions or settings share their
//! predecessor's layout.

use crate::registry::{FeatureGroup, FeatureId, FeatureType, SchemaVersion};

/// The row format this code writes and reads.
pub const ROW_FORMAT_VERSION: u8 = 1;
/// Format version byte and schema version.
pub const ROW_HEADER_LEN: usize = 1 + 4;
/// Bytes of one var offsets entry.
pub(crate) const VAR_OFFSET_LEN: usize = 4;

/// Where a slot's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// `width` bytes at byte offset `at` from the start of the row.
    Fixed { at: usize, width: usize },
    /// At this index of the var offsets table.
    Var(usize),
}

/// One feature's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub id: FeatureId,
    pub ty: FeatureType,
    pub place: Place,
}

/// The layout of rows written under one schema version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// In feature id order.
    pub slots: Vec<Slot>,
    /// Offset of the var offsets table (the end of the fixed section).
    pub offsets_start: usize,
    /// Number of variable-length slots.
    pub var_count: usize,
}

impl Layout {
    fn new(features: &[(FeatureId, FeatureType)]) -> Layout {
        let bitmap_len = features.len().div_ceil(8);
        let mut fixed_at = ROW_HEADER_LEN + bitmap_len;
        let mut var_count = 0;
        let slots = features
            .iter()
            .map(|&(id, ty)| {
                let place = match ty.fixed_width() {
                    Some(width) => {
                        fixed_at += width;
                        Place::Fixed {
                            at: fixed_at - width,
                            width,
                        }
                    }
                    None => {
                        var_count += 1;
                        Place::Var(var_count - 1)
                    }
                };
                Slot { id, ty, place }
            })
            .collect();
        Layout {
            slots,
            offsets_start: fixed_at,
            var_count,
        }
    }

    /// Offset of the var data; also the length of a row with no var data.
    pub fn data_start(&self) -> usize {
        self.offsets_start + VAR_OFFSET_LEN * self.var_count
    }

    /// The slot of feature `id`, if it has one in this layout.
    pub fn slot_of(&self, id: FeatureId) -> Option<(usize, &Slot)> {
        let i = self.slots.binary_search_by_key(&id, |s| s.id).ok()?;
        Some((i, &self.slots[i]))
    }
}

/// Every layout of a group, and which schema version uses which.
#[derive(Debug)]
pub(crate) struct Layouts {
    /// `by_version[v - 1]` is the index in `layouts` of version `v`'s layout.
    by_version: Vec<usize>,
    layouts: Vec<Layout>,
}

impl Layouts {
    /// The layouts of every schema version of `group`.
    pub fn of(group: &FeatureGroup) -> Layouts {
        let live = group
            .features
            .iter()
            .map(|f| (f.id, f.ty, f.added_in, None));
        let removed = group
            .removed
            .iter()
            .map(|f| (f.id, f.ty, f.added_in, Some(f.removed_in)));
        let mut all: Vec<_> = live.chain(removed).collect();
        all.sort_by_key(|f| f.0);
        let mut by_version = Vec::with_capacity(group.schema_version as usize);
        let mut layouts: Vec<Layout> = Vec::new();
        let mut previous = None;
        for v in 1..=group.schema_version {
            let existing: Vec<(FeatureId, FeatureType)> = all
                .iter()
                .filter(|(_, _, added, removed)| *added <= v && removed.is_none_or(|r| v < r))
                .map(|&(id, ty, _, _)| (id, ty))
                .collect();
            if previous.as_ref() != Some(&existing) {
                layouts.push(Layout::new(&existing));
                previous = Some(existing);
            }
            by_version.push(layouts.len() - 1);
        }
        Layouts {
            by_version,
            layouts,
        }
    }

    /// The index and layout of rows written under `version`.
    pub fn get(&self, version: SchemaVersion) -> Option<(usize, &Layout)> {
        let i = *self.by_version.get((version as usize).checked_sub(1)?)?;
        Some((i, &self.layouts[i]))
    }

    /// Every distinct layout, oldest first.
    pub fn all(&self) -> &[Layout] {
        &self.layouts
    }

    /// The layout new rows are written with.
    pub fn newest(&self) -> Option<&Layout> {
        self.layouts.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_a_mixed_layout() {
        let layout = Layout::new(&[
            (0, FeatureType::Int64),
            (1, FeatureType::String),
            (2, FeatureType::Bool),
            (3, FeatureType::Embedding(2)),
            (5, FeatureType::Bytes),
        ]);
        let places: Vec<Place> = layout.slots.iter().map(|s| s.place).collect();
        // header 5, bitmap 1: fixed from 6
        assert_eq!(
            places,
            [
                Place::Fixed { at: 6, width: 8 },
                Place::Var(0),
                Place::Fixed { at: 14, width: 1 },
                Place::Fixed { at: 15, width: 8 },
                Place::Var(1)
            ]
        );
        assert_eq!(layout.offsets_start, 23);
        assert_eq!(layout.data_start(), 31);
        assert_eq!(layout.slot_of(5).map(|(i, _)| i), Some(4));
        assert!(layout.slot_of(4).is_none());
    }
}
