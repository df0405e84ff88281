//! Builders shared by the unit tests of this crate.

use std::time::Duration;

use drsync_core::config::{Role, VerifyConfig};
use drsync_core::{Region, ServiceRef, Sku, SkuTier, StorageAccess, StorageTarget, SubscriptionId};

use crate::topology::{Replication, ServiceNode, StorageNode, Topology, TopologyErrors};

pub(crate) const SUB: &str = "00000000-1111-2222-3333-444444444444";

pub(crate) fn service_ref(name: &str) -> ServiceRef {
    ServiceRef::new(
        SubscriptionId::parse(SUB).unwrap(),
        format!("rg-{name}"),
        name,
    )
    .unwrap()
}

pub(crate) fn service(name: &str, region: &str, tier: SkuTier, role: Role) -> ServiceNode {
    ServiceNode {
        service: service_ref(name),
        region: Region::parse(region).unwrap(),
        sku: Sku { tier, capacity: 1 },
        role,
    }
}

pub(crate) fn primary(name: &str, region: &str) -> ServiceNode {
    service(name, region, SkuTier::Premium, Role::Primary)
}

pub(crate) fn storage(name: &str, region: &str) -> StorageNode {
    let account = name.replace('-', "");
    StorageNode {
        name: name.into(),
        region: Region::parse(region).unwrap(),
        target: StorageTarget {
            endpoint: format!("dir:/nonexistent/{account}"),
            account,
            container: "apim-backups".into(),
            access: StorageAccess::SystemAssignedIdentity,
        },
    }
}

pub(crate) fn edge(name: &str, from: &str, to: &[&str], storage: &str) -> Replication {
    Replication {
        name: name.into(),
        from: from.into(),
        to: to.iter().map(|t| t.to_string()).collect(),
        storage: storage.into(),
        rpo: Duration::from_secs(3600),
        retention: Duration::from_secs(14 * 86_400),
        rto: None,
        verify: VerifyConfig::default(),
    }
}

pub(crate) fn topo(
    services: Vec<ServiceNode>,
    storage: Vec<StorageNode>,
    replications: Vec<Replication>,
) -> Result<Topology, TopologyErrors> {
    Topology::new(services, storage, replications)
}

/// The demo-like topology: a Premium primary in West Europe, a standby in North Europe and a
/// staging copy in West Europe, backups in North Europe.
pub(crate) fn demo() -> Topology {
    topo(
        vec![
            primary("apim-weu", "westeurope"),
            service("apim-neu", "northeurope", SkuTier::Premium, Role::Standby),
            service("apim-stg", "westeurope", SkuTier::Premium, Role::Staging),
        ],
        vec![storage("neu-backups", "northeurope")],
        vec![edge(
            "contoso-dr",
            "apim-weu",
            &["apim-neu", "apim-stg"],
            "neu-backups",
        )],
    )
    .unwrap()
}
