//! API Management pricing tiers (SKUs) and the backup/restore rules that follow from them.

use std::fmt;

/// An API Management pricing tier, as ARM names it in `sku.name` (api-version 2024-05-01).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum SkuTier {
    /// Developer: non-production, no SLA.
    Developer,
    /// Basic (classic).
    Basic,
    /// Standard (classic).
    Standard,
    /// Premium (classic): multi-region, availability zones.
    Premium,
    /// Consumption: serverless, no backup/restore.
    Consumption,
    /// Isolated (preview at the time of writing).
    Isolated,
    /// Basic v2: no backup/restore.
    BasicV2,
    /// Standard v2: no backup/restore.
    StandardV2,
}

/// The tier name is not an API Management SKU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown SKU `{0}` (expected one of Developer, Basic, Standard, Premium, Consumption, Isolated, BasicV2, StandardV2)"
)]
pub struct UnknownSku(pub String);

impl SkuTier {
    /// Every tier.
    pub const ALL: [SkuTier; 8] = [
        Self::Developer,
        Self::Basic,
        Self::Standard,
        Self::Premium,
        Self::Consumption,
        Self::Isolated,
        Self::BasicV2,
        Self::StandardV2,
    ];

    /// The ARM name (`Premium`, `StandardV2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Developer => "Developer",
            Self::Basic => "Basic",
            Self::Standard => "Standard",
            Self::Premium => "Premium",
            Self::Consumption => "Consumption",
            Self::Isolated => "Isolated",
            Self::BasicV2 => "BasicV2",
            Self::StandardV2 => "StandardV2",
        }
    }

    /// Parses an ARM tier name, case-insensitively (ARM itself is case-insensitive here).
    pub fn parse(text: &str) -> Result<Self, UnknownSku> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| UnknownSku(text.into()))
    }

    /// Whether ARM backup/restore works on this tier. Microsoft documents it for Developer,
    /// Basic, Standard and Premium; not for Consumption, not for the v2 tiers. Isolated is not
    /// listed as supported, so drsync treats it as unsupported rather than guess.
    pub fn supports_backup_restore(self) -> bool {
        matches!(
            self,
            Self::Developer | Self::Basic | Self::Standard | Self::Premium
        )
    }
}

impl fmt::Display for SkuTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SkuTier {
    type Err = UnknownSku;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A tier and a unit count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Sku {
    /// The pricing tier.
    pub tier: SkuTier,
    /// Scale units (0 for Consumption).
    pub capacity: u32,
}

impl Sku {
    /// Whether ARM backup/restore works on this SKU.
    pub fn supports_backup_restore(&self) -> bool {
        self.tier.supports_backup_restore()
    }

    /// Whether a backup taken from a service with SKU `self` can be restored into `target`.
    /// Azure requires the same tier; the unit count may differ.
    pub fn restorable_into(&self, target: &Sku) -> bool {
        self.tier == target.tier && self.supports_backup_restore()
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} unit{})",
            self.tier,
            self.capacity,
            if self.capacity == 1 { "" } else { "s" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_restore_support_follows_the_documentation() {
        let supported: Vec<_> = SkuTier::ALL
            .into_iter()
            .filter(|t| t.supports_backup_restore())
            .collect();
        assert_eq!(
            supported,
            [
                SkuTier::Developer,
                SkuTier::Basic,
                SkuTier::Standard,
                SkuTier::Premium
            ]
        );
    }

    #[test]
    fn parse_round_trips_and_ignores_case() {
        for t in SkuTier::ALL {
            assert_eq!(SkuTier::parse(t.as_str()).unwrap(), t);
        }
        assert_eq!(SkuTier::parse("premium").unwrap(), SkuTier::Premium);
        assert!(SkuTier::parse("Gold").is_err());
    }

    #[test]
    fn restore_needs_the_same_tier() {
        let p1 = Sku {
            tier: SkuTier::Premium,
            capacity: 1,
        };
        let p2 = Sku {
            tier: SkuTier::Premium,
            capacity: 2,
        };
        let s1 = Sku {
            tier: SkuTier::Standard,
            capacity: 1,
        };
        let c = Sku {
            tier: SkuTier::Consumption,
            capacity: 0,
        };
        assert!(p1.restorable_into(&p2));
        assert!(!p1.restorable_into(&s1));
        assert!(!c.restorable_into(&c));
    }
}
