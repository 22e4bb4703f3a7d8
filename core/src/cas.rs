//! The hash-sharded, content-addressed layout: `ab/cd/abcd…`.
//!
//! A store with a million files in one directory is slow to list and to look up on most
//! filesystems; two levels of two hex characters spread them over 65,536 directories
//! (about 15 files each at a million). The depth is configurable because a small test
//! store reads better flat and a very large one may want three levels.

use std::path::{Path, PathBuf};

use crate::id::BlockId;

/// How ids map to relative paths. `levels` directories of `width` hex characters each,
/// then the full id as the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharding {
    levels: u8,
    width: u8,
}

impl Default for Sharding {
    /// Two levels of two characters: `ab/cd/abcd…`.
    fn default() -> Self {
        Self {
            levels: 2,
            width: 2,
        }
    }
}

impl Sharding {
    /// At most 4 levels and `levels * width <= 8`: deeper trees only cost lookups.
    pub fn new(levels: u8, width: u8) -> Result<Self, String> {
        if levels > 4 || (levels > 0 && width == 0) || usize::from(levels) * usize::from(width) > 8
        {
            return Err(format!(
                "sharding of {levels} levels x {width} characters is out of range (levels <= 4, levels*width <= 8)"
            ));
        }
        Ok(Self { levels, width })
    }

    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// The path of `id` below `root`.
    pub fn path(&self, root: &Path, id: &BlockId) -> PathBuf {
        let hex = id.to_string();
        let mut p = root.to_path_buf();
        let w = usize::from(self.width);
        for level in 0..usize::from(self.levels) {
            p.push(&hex[level * w..(level + 1) * w]);
        }
        p.push(&hex);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_two_by_two() {
        let id = BlockId::parse(&format!("abcd{}", "0".repeat(60))).unwrap();
        let p = Sharding::default().path(Path::new("/d/blocks"), &id);
        assert_eq!(p, Path::new("/d/blocks/ab/cd").join(id.to_string()));
    }

    #[test]
    fn flat_and_bounds() {
        let id = BlockId::of(b"x");
        let flat = Sharding::new(0, 0).unwrap();
        assert_eq!(
            flat.path(Path::new("r"), &id),
            Path::new("r").join(id.to_string())
        );
        assert!(Sharding::new(5, 1).is_err());
        assert!(Sharding::new(3, 3).is_err());
        assert!(Sharding::new(2, 0).is_err());
        let three = Sharding::new(3, 2).unwrap();
        assert_eq!(three.path(Path::new("r"), &id).components().count(), 5);
    }
}
