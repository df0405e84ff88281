//! Compares a restored service with the configuration it should hold, item by item.
//!
//! [`verify`] takes three snapshots: the expected source (the backup's source, read just before
//! the restore), the restored target, and the target as it was before the restore. The first
//! two must hold the same APIs, products and named values (by name, count and content hash) and
//! the same SKU tier; the last two must hold the same hostnames and identity, because a restore
//! must not touch them. Named values overridden after the restore (staging clones) are expected
//! to differ from the source; when the caller knows the content it wrote, it passes the hash it
//! expects instead.

use std::collections::BTreeMap;

use drsync_core::Sku;

use super::snapshot::{ConfigSnapshot, IdentitySnapshot, ItemKind};

/// Named values replaced after a restore, and what each should hash to afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Overrides {
    /// Named value name to the content hash expected after the override; `None` when the
    /// caller cannot know it (the value is then only required to exist).
    pub named_values: BTreeMap<String, Option<String>>,
}

impl Overrides {
    /// No overrides.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.named_values.is_empty()
    }
}

/// One way the restored service differs from what it should be.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// In the source, not in the restored service.
    Missing {
        /// The item's kind.
        item: ItemKind,
        /// Its name.
        name: String,
    },
    /// In the restored service, not in the source.
    Extra {
        /// The item's kind.
        item: ItemKind,
        /// Its name.
        name: String,
    },
    /// In both, with different content.
    Changed {
        /// The item's kind.
        item: ItemKind,
        /// Its name.
        name: String,
        /// The source's content hash.
        expected_sha256: String,
        /// The restored service's content hash.
        actual_sha256: String,
    },
    /// An override was not applied: the named value is absent or holds other content.
    OverrideNotApplied {
        /// The named value.
        name: String,
        /// The hash the override should have produced, if known.
        expected_sha256: Option<String>,
        /// What the restored service holds (`None`: the named value is missing).
        actual_sha256: Option<String>,
    },
    /// The SKU tier differs from the backup source's.
    SkuDiffers {
        /// The source's SKU.
        expected: Sku,
        /// The restored service's SKU.
        actual: Sku,
    },
    /// The restore changed the target's hostnames.
    HostnamesNotKept {
        /// Before the restore.
        before: Vec<String>,
        /// After the restore.
        after: Vec<String>,
    },
    /// The restore changed the target's managed identity.
    IdentityNotKept {
        /// Before the restore.
        before: Option<IdentitySnapshot>,
        /// After the restore.
        after: Option<IdentitySnapshot>,
    },
}

impl Difference {
    /// One sentence for people, naming the item.
    pub fn message(&self) -> String {
        match self {
            Difference::Missing { item, name } => {
                format!("{item} `{name}` is in the source but missing from the restored service")
            }
            Difference::Extra { item, name } => {
                format!("{item} `{name}` is in the restored service but not in the source")
            }
            Difference::Changed {
                item,
                name,
                expected_sha256,
                actual_sha256,
            } => format!(
                "{item} `{name}` differs: content hash {} in the source, {} in the restored service",
                short(expected_sha256),
                short(actual_sha256)
            ),
            Difference::OverrideNotApplied {
                name,
                expected_sha256,
                actual_sha256,
            } => match (expected_sha256, actual_sha256) {
                (_, None) => {
                    format!("overridden named value `{name}` is missing from the restored service")
                }
                (Some(e), Some(a)) => format!(
                    "overridden named value `{name}` was not applied: expected content hash {}, found {}",
                    short(e),
                    short(a)
                ),
                (None, Some(_)) => format!("overridden named value `{name}` was not applied"),
            },
            Difference::SkuDiffers { expected, actual } => {
                format!("SKU differs: the source is {expected}, the restored service is {actual}")
            }
            Difference::HostnamesNotKept { before, after } => format!(
                "hostnames NOT kept: before the restore [{}], after [{}]",
                before.join(", "),
                after.join(", ")
            ),
            Difference::IdentityNotKept { before, after } => format!(
                "managed identity NOT kept: before the restore {}, after {}",
                show_identity(before),
                show_identity(after)
            ),
        }
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn show_identity(identity: &Option<IdentitySnapshot>) -> String {
    identity
        .as_ref()
        .map_or_else(|| "none".to_string(), ToString::to_string)
}

/// Counts of one item kind on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ItemCount {
    /// The item kind.
    pub item: ItemKind,
    /// How many the source holds.
    pub expected: usize,
    /// How many the restored service holds.
    pub actual: usize,
}

/// The result of comparing a restored service with its source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerificationReport {
    /// The source's resource id; `None` when the source could not be read (failover from an
    /// unreachable region): only the target's hostnames and identity were then checked.
    pub source: Option<String>,
    /// The restored service's resource id.
    pub target: String,
    /// Item counts, one entry per kind compared.
    pub counts: Vec<ItemCount>,
    /// The kinds compared (a config can switch some off).
    pub checked: Vec<ItemKind>,
    /// Named values the caller overrode (their source content is not expected).
    pub overridden: Vec<String>,
    /// Every difference, in a stable order: items by kind and name, then SKU, hostnames,
    /// identity.
    pub differences: Vec<Difference>,
}

impl VerificationReport {
    /// Whether the restored service matches.
    pub fn passed(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Which item kinds to compare (`[replication.verify]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyScope {
    /// Compare APIs.
    pub apis: bool,
    /// Compare products.
    pub products: bool,
    /// Compare named values.
    pub named_values: bool,
}

impl Default for VerifyScope {
    fn default() -> Self {
        Self {
            apis: true,
            products: true,
            named_values: true,
        }
    }
}

impl VerifyScope {
    fn includes(&self, kind: ItemKind) -> bool {
        match kind {
            ItemKind::Api => self.apis,
            ItemKind::Product => self.products,
            ItemKind::NamedValue => self.named_values,
        }
    }
}

/// Compares `restored` with `expected_source` (content, SKU) and with `target_before` (hostnames,
/// identity). `target_before` is `None` when the target did not exist before (a new drill
/// service); hostnames and identity are then not compared.
pub fn verify(
    expected_source: &ConfigSnapshot,
    restored: &ConfigSnapshot,
    target_before: Option<&ConfigSnapshot>,
    overrides: &Overrides,
    scope: VerifyScope,
) -> VerificationReport {
    let mut differences = Vec::new();
    let mut counts = Vec::new();
    let mut checked = Vec::new();
    for kind in ItemKind::ALL {
        if !scope.includes(kind) {
            continue;
        }
        checked.push(kind);
        let want = expected_source.items(kind);
        let have = restored.items(kind);
        counts.push(ItemCount {
            item: kind,
            expected: want.len(),
            actual: have.len(),
        });
        let is_override =
            |name: &str| kind == ItemKind::NamedValue && overrides.named_values.contains_key(name);
        for (name, expected) in want {
            if is_override(name) {
                continue;
            }
            match have.get(name) {
                None => differences.push(Difference::Missing {
                    item: kind,
                    name: name.clone(),
                }),
                Some(actual) if actual != expected => differences.push(Difference::Changed {
                    item: kind,
                    name: name.clone(),
                    expected_sha256: expected.clone(),
                    actual_sha256: actual.clone(),
                }),
                Some(_) => {}
            }
        }
        for name in have.keys() {
            if !want.contains_key(name) && !is_override(name) {
                differences.push(Difference::Extra {
                    item: kind,
                    name: name.clone(),
                });
            }
        }
        if kind == ItemKind::NamedValue {
            for (name, expected) in &overrides.named_values {
                let actual = have.get(name);
                let applied = match (expected, actual) {
                    (_, None) => false,
                    (Some(e), Some(a)) => e == a,
                    (None, Some(_)) => true,
                };
                if !applied {
                    differences.push(Difference::OverrideNotApplied {
                        name: name.clone(),
                        expected_sha256: expected.clone(),
                        actual_sha256: actual.cloned(),
                    });
                }
            }
        }
    }
    // Azure requires the same tier; the unit count may differ (Sku::restorable_into).
    if expected_source.sku.tier != restored.sku.tier {
        differences.push(Difference::SkuDiffers {
            expected: expected_source.sku,
            actual: restored.sku,
        });
    }
    if let Some(before) = target_before {
        kept(before, restored, &mut differences);
    }
    VerificationReport {
        source: Some(expected_source.service.clone()),
        target: restored.service.clone(),
        counts,
        checked,
        overridden: overrides.named_values.keys().cloned().collect(),
        differences,
    }
}

/// What can be checked without the source: that the restore kept the target's hostnames and
/// identity. Used when the source's region is unreachable.
pub fn verify_kept(
    restored: &ConfigSnapshot,
    target_before: Option<&ConfigSnapshot>,
) -> VerificationReport {
    let mut differences = Vec::new();
    if let Some(before) = target_before {
        kept(before, restored, &mut differences);
    }
    VerificationReport {
        source: None,
        target: restored.service.clone(),
        counts: Vec::new(),
        checked: Vec::new(),
        overridden: Vec::new(),
        differences,
    }
}

fn kept(before: &ConfigSnapshot, after: &ConfigSnapshot, differences: &mut Vec<Difference>) {
    if before.hostnames != after.hostnames {
        differences.push(Difference::HostnamesNotKept {
            before: before.hostnames.clone(),
            after: after.hostnames.clone(),
        });
    }
    if before.identity != after.identity {
        differences.push(Difference::IdentityNotKept {
            before: before.identity.clone(),
            after: after.identity.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::snapshot::{SnapshotItem, content_hash};
    use super::*;
    use drsync_core::SkuTier;
    use serde_json::json;

    const SRC: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ApiManagement/service/src";
    const DST: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ApiManagement/service/dst";

    fn snap(id: &str, apis: &[(&str, &str)], nvs: &[(&str, &str)]) -> ConfigSnapshot {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .into();
        let mut s = ConfigSnapshot::new(
            id,
            at,
            Sku {
                tier: SkuTier::Premium,
                capacity: 1,
            },
        );
        s.add_items(
            ItemKind::Api,
            apis.iter()
                .map(|(n, p)| SnapshotItem::new(*n, json!({ "path": p }))),
        );
        s.add_items(
            ItemKind::NamedValue,
            nvs.iter()
                .map(|(n, v)| SnapshotItem::new(*n, json!({ "value": v, "secret": false }))),
        );
        s.add_items(
            ItemKind::Product,
            [SnapshotItem::new("starter", json!({"state": "published"}))],
        );
        s.set_hostnames([format!("{}.azure-api.net", id.rsplit('/').next().unwrap())]);
        s
    }

    fn messages(r: &VerificationReport) -> Vec<String> {
        r.differences.iter().map(Difference::message).collect()
    }

    #[test]
    fn identical_content_passes() {
        let src = snap(SRC, &[("orders", "o")], &[("backend", "https://b")]);
        let dst = snap(DST, &[("orders", "o")], &[("backend", "https://b")]);
        let r = verify(
            &src,
            &dst,
            Some(&dst),
            &Overrides::none(),
            VerifyScope::default(),
        );
        assert!(r.passed(), "{:?}", messages(&r));
        assert_eq!(r.counts.len(), 3);
        assert_eq!(
            r.counts[0],
            ItemCount {
                item: ItemKind::Api,
                expected: 1,
                actual: 1
            }
        );
    }

    #[test]
    fn missing_extra_and_changed_items_are_named() {
        let src = snap(
            SRC,
            &[("orders", "o"), ("payments", "p")],
            &[("backend", "https://b")],
        );
        let dst = snap(
            DST,
            &[("orders", "o2"), ("legacy", "l")],
            &[("backend", "https://b")],
        );
        let r = verify(&src, &dst, None, &Overrides::none(), VerifyScope::default());
        let m = messages(&r);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(
            m[0].starts_with("API `orders` differs: content hash"),
            "{}",
            m[0]
        );
        assert_eq!(
            m[1],
            "API `payments` is in the source but missing from the restored service"
        );
        assert_eq!(
            m[2],
            "API `legacy` is in the restored service but not in the source"
        );
    }

    #[test]
    fn scope_switches_kinds_off() {
        let src = snap(SRC, &[("orders", "o")], &[]);
        let dst = snap(DST, &[], &[]);
        let scope = VerifyScope {
            apis: false,
            ..VerifyScope::default()
        };
        let r = verify(&src, &dst, None, &Overrides::none(), scope);
        assert!(r.passed());
        assert_eq!(r.checked, [ItemKind::Product, ItemKind::NamedValue]);
    }

    #[test]
    fn sku_tier_must_match_but_capacity_may_differ() {
        let src = snap(SRC, &[], &[]);
        let mut dst = snap(DST, &[], &[]);
        dst.sku.capacity = 3;
        assert!(verify(&src, &dst, None, &Overrides::none(), VerifyScope::default()).passed());
        dst.sku.tier = SkuTier::Developer;
        let r = verify(&src, &dst, None, &Overrides::none(), VerifyScope::default());
        assert_eq!(
            messages(&r),
            [
                "SKU differs: the source is Premium (1 unit), the restored service is Developer (3 units)"
            ]
        );
    }

    #[test]
    fn hostnames_and_identity_must_be_kept() {
        let src = snap(SRC, &[], &[]);
        let before = {
            let mut b = snap(DST, &[], &[]);
            b.identity = Some(IdentitySnapshot {
                kind: "SystemAssigned".into(),
                principal_id: Some("p-dst".into()),
                tenant_id: None,
                user_assigned: vec![],
            });
            b
        };
        let mut after = before.clone();
        after.set_hostnames(["src.azure-api.net".to_string()]);
        after.identity.as_mut().unwrap().principal_id = Some("p-src".into());
        let r = verify(
            &src,
            &after,
            Some(&before),
            &Overrides::none(),
            VerifyScope::default(),
        );
        assert_eq!(
            messages(&r),
            [
                "hostnames NOT kept: before the restore [dst.azure-api.net], after [src.azure-api.net]",
                "managed identity NOT kept: before the restore SystemAssigned principal p-dst, after SystemAssigned principal p-src",
            ]
        );
    }

    #[test]
    fn without_the_source_only_hostnames_and_identity_are_checked() {
        let before = snap(DST, &[("a", "a")], &[]);
        let mut after = snap(DST, &[("b", "b")], &[]);
        assert!(verify_kept(&after, Some(&before)).passed());
        after.set_hostnames(["other.example.com".to_string()]);
        let r = verify_kept(&after, Some(&before));
        assert_eq!(r.source, None);
        assert_eq!(
            messages(&r),
            [
                "hostnames NOT kept: before the restore [dst.azure-api.net], after [other.example.com]"
            ]
        );
    }

    #[test]
    fn overrides_are_expected_to_differ_and_must_be_applied() {
        let src = snap(SRC, &[], &[("backend", "https://prod"), ("plain", "x")]);
        let dst = snap(DST, &[], &[("backend", "https://staging"), ("plain", "x")]);
        let staging_hash = content_hash(
            ItemKind::NamedValue,
            DST,
            &json!({"value": "https://staging", "secret": false}),
        );
        let mut o = Overrides::none();
        o.named_values
            .insert("backend".into(), Some(staging_hash.clone()));
        let r = verify(&src, &dst, None, &o, VerifyScope::default());
        assert!(r.passed(), "{:?}", messages(&r));
        assert_eq!(r.overridden, ["backend"]);
        assert_eq!(r.source.as_deref(), Some(SRC));

        // Without the override, the same state is a content difference.
        let r = verify(&src, &dst, None, &Overrides::none(), VerifyScope::default());
        assert_eq!(r.differences.len(), 1);
        assert!(messages(&r)[0].starts_with("named value `backend` differs"));

        // An override that did not land (the source value is still there) is reported.
        let r = verify(&src, &src.clone(), None, &o, VerifyScope::default());
        assert_eq!(messages(&r).len(), 1);
        assert!(messages(&r)[0].starts_with("overridden named value `backend` was not applied"));

        // An override of a value that is missing is reported too.
        let mut o2 = Overrides::none();
        o2.named_values.insert("nope".into(), None);
        let r = verify(&src, &src.clone(), None, &o2, VerifyScope::default());
        assert_eq!(
            messages(&r),
            ["overridden named value `nope` is missing from the restored service"]
        );
    }
}
