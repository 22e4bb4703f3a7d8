//! Byte sizes and durations as people write them in flags: `64MiB`, `1GiB`, `500ms`, `3s`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A number of bytes. Parses `123`, `64KiB`, `64MiB`, `1GiB`, `2TiB` (binary units) and
/// `1KB`, `1MB`, `1GB`, `1TB` (decimal), case-insensitive unit, optional space; and
/// Kubernetes' binary suffixes `Ki`, `Mi`, `Gi`, `Ti`, so a volume's size can be passed
/// as written in its claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1 << 10;
    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(format!("invalid size {s:?}: expected a number like 64MiB"));
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: number too large"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "ki" | "kib" => 1 << 10,
            "m" | "mi" | "mib" => 1 << 20,
            "g" | "gi" | "gib" => 1 << 30,
            "t" | "ti" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            other => return Err(format!("invalid size {s:?}: unknown unit {other:?}")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {s:?}: too large"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the value exactly, so it parses back equal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (m, u) in UNITS {
            if self.0 >= m && self.0.is_multiple_of(m) {
                return write!(f, "{}{u}", self.0 / m);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A duration written `500ms`, `3s`, `5m`, `1h`, `2d`, or a combination like `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("invalid duration \"\": expected e.g. 3s, 500ms, 1h".into());
        }
        let mut total = Duration::ZERO;
        let mut rest = t;
        while !rest.is_empty() {
            let split = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (num, tail) = rest.split_at(split);
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(tail.len());
            let (unit, next) = tail.split_at(unit_len);
            if num.is_empty() || unit.is_empty() {
                return Err(format!(
                    "invalid duration {s:?}: expected e.g. 3s, 500ms, 1h"
                ));
            }
            let n: u64 = num
                .parse()
                .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
            let part = match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                "d" => Duration::from_secs(n.saturating_mul(86_400)),
                other => return Err(format!("invalid duration {s:?}: unknown unit {other:?}")),
            };
            total = total
                .checked_add(part)
                .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
            rest = next;
        }
        Ok(HumanDuration(total))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let ok = [
            ("0", 0),
            ("123", 123),
            ("64KiB", 64 << 10),
            ("64MiB", 64 << 20),
            ("64mib", 64 << 20),
            ("1GiB", 1 << 30),
            ("1 GiB", 1 << 30),
            ("32M", 32 << 20),
            ("1GB", 1_000_000_000),
            ("5B", 5),
            ("5Gi", 5 << 30),
            ("512Mi", 512 << 20),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<ByteSize>(), Ok(ByteSize(want)), "{s}");
        }
        for bad in [
            "",
            "MiB",
            "-1",
            "1.5GiB",
            "12XB",
            "99999999999999999999",
            "16777216TiB",
        ] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad} should fail");
        }
        for v in [0, 1, 1024, 64 << 20, 3 << 30, 1000] {
            let b = ByteSize(v);
            assert_eq!(b.to_string().parse::<ByteSize>(), Ok(b));
        }
    }

    #[test]
    fn durations() {
        let ok = [
            ("3s", Duration::from_secs(3)),
            ("500ms", Duration::from_millis(500)),
            ("1h", Duration::from_secs(3600)),
            ("24h", Duration::from_secs(86_400)),
            ("1m30s", Duration::from_secs(90)),
            ("2d", Duration::from_secs(172_800)),
            ("0s", Duration::ZERO),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<HumanDuration>(), Ok(HumanDuration(want)), "{s}");
        }
        for bad in ["", "3", "s", "3x", "1.5s", "-1s", "3 s"] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad} should fail");
        }
        for d in [Duration::from_millis(1500), Duration::from_secs(30)] {
            let h = HumanDuration(d);
            assert_eq!(h.to_string().parse::<HumanDuration>(), Ok(h));
        }
    }
}
