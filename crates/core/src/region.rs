//! Azure regions: canonical ARM names, display names, and documented region pairs.
//!
//! The pairs come from Microsoft's "Azure region pairs" documentation (cross-region
//! replication). Most pairs are symmetric; a few are not (Brazil South fails over to South
//! Central US, West India to South India, West US 3 to East US). Newer regions without a pair
//! return `None` from [`Region::pair`].

use std::fmt;

/// (canonical name, display name, paired region).
const REGIONS: &[(&str, &str, Option<&str>)] = &[
    ("eastus", "East US", Some("westus")),
    ("eastus2", "East US 2", Some("centralus")),
    ("westus", "West US", Some("eastus")),
    ("westus2", "West US 2", Some("westcentralus")),
    ("westus3", "West US 3", Some("eastus")),
    ("centralus", "Central US", Some("eastus2")),
    ("northcentralus", "North Central US", Some("southcentralus")),
    ("southcentralus", "South Central US", Some("northcentralus")),
    ("westcentralus", "West Central US", Some("westus2")),
    ("canadacentral", "Canada Central", Some("canadaeast")),
    ("canadaeast", "Canada East", Some("canadacentral")),
    ("brazilsouth", "Brazil South", Some("southcentralus")),
    ("brazilsoutheast", "Brazil Southeast", Some("brazilsouth")),
    ("mexicocentral", "Mexico Central", None),
    ("northeurope", "North Europe", Some("westeurope")),
    ("westeurope", "West Europe", Some("northeurope")),
    ("uksouth", "UK South", Some("ukwest")),
    ("ukwest", "UK West", Some("uksouth")),
    ("francecentral", "France Central", Some("francesouth")),
    ("francesouth", "France South", Some("francecentral")),
    (
        "germanywestcentral",
        "Germany West Central",
        Some("germanynorth"),
    ),
    ("germanynorth", "Germany North", Some("germanywestcentral")),
    (
        "switzerlandnorth",
        "Switzerland North",
        Some("switzerlandwest"),
    ),
    (
        "switzerlandwest",
        "Switzerland West",
        Some("switzerlandnorth"),
    ),
    ("norwayeast", "Norway East", Some("norwaywest")),
    ("norwaywest", "Norway West", Some("norwayeast")),
    ("swedencentral", "Sweden Central", Some("swedensouth")),
    ("swedensouth", "Sweden South", Some("swedencentral")),
    ("polandcentral", "Poland Central", None),
    ("italynorth", "Italy North", None),
    ("spaincentral", "Spain Central", None),
    ("eastasia", "East Asia", Some("southeastasia")),
    ("southeastasia", "Southeast Asia", Some("eastasia")),
    ("japaneast", "Japan East", Some("japanwest")),
    ("japanwest", "Japan West", Some("japaneast")),
    ("koreacentral", "Korea Central", Some("koreasouth")),
    ("koreasouth", "Korea South", Some("koreacentral")),
    (
        "australiaeast",
        "Australia East",
        Some("australiasoutheast"),
    ),
    (
        "australiasoutheast",
        "Australia Southeast",
        Some("australiaeast"),
    ),
    (
        "australiacentral",
        "Australia Central",
        Some("australiacentral2"),
    ),
    (
        "australiacentral2",
        "Australia Central 2",
        Some("australiacentral"),
    ),
    ("centralindia", "Central India", Some("southindia")),
    ("southindia", "South India", Some("centralindia")),
    ("westindia", "West India", Some("southindia")),
    (
        "southafricanorth",
        "South Africa North",
        Some("southafricawest"),
    ),
    (
        "southafricawest",
        "South Africa West",
        Some("southafricanorth"),
    ),
    ("uaenorth", "UAE North", Some("uaecentral")),
    ("uaecentral", "UAE Central", Some("uaenorth")),
    ("qatarcentral", "Qatar Central", None),
    ("israelcentral", "Israel Central", None),
];

/// An Azure region, by its canonical ARM name (`westeurope`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(into = "String")]
pub struct Region(&'static str);

/// The region is not one drsync knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown Azure region `{0}` (use the ARM name such as `westeurope` or the display name such as `West Europe`)"
)]
pub struct UnknownRegion(pub String);

impl Region {
    /// Parses an ARM name (`westeurope`) or a display name (`West Europe`), case-insensitively.
    pub fn parse(text: &str) -> Result<Self, UnknownRegion> {
        let key: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect();
        REGIONS
            .iter()
            .find(|(name, _, _)| *name == key)
            .map(|(name, _, _)| Region(name))
            .ok_or_else(|| UnknownRegion(text.into()))
    }

    /// The canonical ARM name.
    pub fn name(self) -> &'static str {
        self.0
    }

    /// The display name (`West Europe`).
    pub fn display_name(self) -> &'static str {
        self.entry().1
    }

    /// The documented paired region, if this region has one.
    pub fn pair(self) -> Option<Region> {
        self.entry().2.map(Region)
    }

    /// Every region drsync knows, in a stable order.
    pub fn all() -> impl Iterator<Item = Region> {
        REGIONS.iter().map(|(name, _, _)| Region(name))
    }

    fn entry(self) -> &'static (&'static str, &'static str, Option<&'static str>) {
        REGIONS
            .iter()
            .find(|(name, _, _)| *name == self.0)
            .expect("Region holds a known name")
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Region({})", self.0)
    }
}

impl std::str::FromStr for Region {
    type Err = UnknownRegion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Region {
    type Error = UnknownRegion;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

// Written by hand: the derive would tie the deserializer's lifetime to the `'static` name.
impl<'de> serde::Deserialize<'de> for Region {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Region::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl From<Region> for String {
    fn from(value: Region) -> Self {
        value.0.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_display_names() {
        for text in ["westeurope", "West Europe", "WEST EUROPE", " westEurope "] {
            assert_eq!(Region::parse(text).unwrap().name(), "westeurope", "{text}");
        }
        assert_eq!(Region::parse("East US 2").unwrap().name(), "eastus2");
        assert_eq!(
            Region::parse("westeurope").unwrap().display_name(),
            "West Europe"
        );
        assert!(Region::parse("atlantis").is_err());
    }

    #[test]
    fn serde_uses_the_arm_name_and_accepts_display_names() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Holder {
            region: Region,
        }
        // Deserialized from an owned, short-lived string: no `'static` borrow is needed.
        let text = String::from("region = \"West Europe\"");
        let h: Holder = toml::from_str(&text).unwrap();
        drop(text);
        assert_eq!(h.region.name(), "westeurope");
        assert_eq!(
            toml::to_string(&h).unwrap().trim(),
            "region = \"westeurope\""
        );
        assert!(toml::from_str::<Holder>("region = \"atlantis\"").is_err());
    }

    #[test]
    fn pairs_are_documented_ones() {
        let pair = |r: &str| Region::parse(r).unwrap().pair().map(Region::name);
        assert_eq!(pair("westeurope"), Some("northeurope"));
        assert_eq!(pair("northeurope"), Some("westeurope"));
        assert_eq!(pair("brazilsouth"), Some("southcentralus"));
        assert_eq!(pair("polandcentral"), None);
        assert!(Region::all().count() >= 30);
        // Every pair names a known region.
        for r in Region::all() {
            if let Some(p) = r.pair() {
                assert_ne!(p, r);
                assert!(Region::parse(p.name()).is_ok());
            }
        }
    }
}
