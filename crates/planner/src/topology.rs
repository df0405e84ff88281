//! The replication topology: services as nodes, replication edges (source -> target) as a
//! petgraph graph, checked against the rules Azure and disaster recovery impose.
//!
//! The configuration parser checks names and references; this module checks the graph:
//! cycles, a target with two sources, SKU pairs, unsupported tiers, a DR standby sharing its
//! primary's region, and roles that contradict the edges. It also warns when a DR edge keeps its
//! backups in the primary's region. It performs no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use drsync_core::config::{Config, Role, VerifyConfig};
use drsync_core::{Region, ServiceRef, Sku, StorageTarget};

#[cfg(test)]
mod tests;

/// One service in the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNode {
    /// Subscription, resource group and name.
    pub service: ServiceRef,
    /// Its region.
    pub region: Region,
    /// Its configured SKU.
    pub sku: Sku,
    /// Its configured role.
    pub role: Role,
}

impl ServiceNode {
    /// The service name.
    pub fn name(&self) -> &str {
        &self.service.name
    }
}

/// A storage container that carries backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageNode {
    /// The `[[storage]]` entry name.
    pub name: String,
    /// The account's region.
    pub region: Region,
    /// Account, container, endpoint, access.
    pub target: StorageTarget,
}

/// One replication: a source backed up into a storage container and restored into targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// The replication's name.
    pub name: String,
    /// The source service name.
    pub from: String,
    /// Target service names, in configuration order.
    pub to: Vec<String>,
    /// The storage entry's name.
    pub storage: String,
    /// Recovery point objective.
    pub rpo: Duration,
    /// Backup retention.
    pub retention: Duration,
    /// Recovery time objective.
    pub rto: Option<Duration>,
    /// What verification compares.
    pub verify: VerifyConfig,
}

/// A rule the topology breaks. Every message names the services and replications involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// A replication names a service that is not configured.
    #[error("replication `{replication}` names service `{service}`, which is not configured")]
    UnknownService {
        /// The replication.
        replication: String,
        /// The missing service.
        service: String,
    },
    /// A replication names a storage entry that is not configured.
    #[error("replication `{replication}` names storage `{storage}`, which is not configured")]
    UnknownStorage {
        /// The replication.
        replication: String,
        /// The missing storage entry.
        storage: String,
    },
    /// The replication edges form a cycle.
    #[error(
        "replication cycle: {path} (a service cannot be restored, directly or indirectly, from its own backups)"
    )]
    Cycle {
        /// The services on the cycle, `a -> b -> a`.
        path: String,
    },
    /// A target is restored from more than one source.
    #[error(
        "service `{target}` is the target of more than one replication ({sources}); each target must have exactly one source"
    )]
    TwoSources {
        /// The target.
        target: String,
        /// The sources, as `replication (from service)`.
        sources: String,
    },
    /// The source and target SKUs differ: Azure refuses the restore.
    #[error(
        "replication `{replication}`: SKU mismatch: source `{from}` is {from_sku}, target `{to}` is {to_sku}; Azure restores a backup only into the same tier"
    )]
    SkuMismatch {
        /// The replication.
        replication: String,
        /// The source.
        from: String,
        /// The source's SKU.
        from_sku: Sku,
        /// The target.
        to: String,
        /// The target's SKU.
        to_sku: Sku,
    },
    /// A service in a replication is on a tier without backup/restore.
    #[error(
        "replication `{replication}`: service `{service}` is on the {tier} tier, which does not support backup and restore (supported: Developer, Basic, Standard, Premium)"
    )]
    UnsupportedTier {
        /// The replication.
        replication: String,
        /// The service.
        service: String,
        /// Its tier.
        tier: String,
    },
    /// A DR standby in the same region as its primary does not survive a region outage.
    #[error(
        "replication `{replication}`: standby `{standby}` is in {region}, the same region as its primary `{primary}`; a DR standby must be in another region (use role = \"staging\" for a same-region copy)"
    )]
    StandbyInPrimaryRegion {
        /// The replication.
        replication: String,
        /// The standby.
        standby: String,
        /// The primary.
        primary: String,
        /// The shared region.
        region: Region,
    },
    /// A service's role contradicts how replications use it.
    #[error(
        "replication `{replication}`: service `{service}` has role {role} but is used as a {used_as}; {hint}"
    )]
    ConflictingRole {
        /// The replication.
        replication: String,
        /// The service.
        service: String,
        /// Its configured role.
        role: Role,
        /// `source` or `target`.
        used_as: &'static str,
        /// What to change.
        hint: &'static str,
    },
}

/// Every rule the topology breaks, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TopologyErrors(pub Vec<TopologyError>);

impl fmt::Display for TopologyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "the replication topology is invalid ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

/// Something that works but deserves attention.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopologyWarning {
    /// A DR replication keeps its backups in the primary's region.
    StorageInPrimaryRegion {
        /// The replication.
        replication: String,
        /// The storage entry.
        storage: String,
        /// The primary's (and storage's) region.
        region: Region,
        /// The documented paired region, if any.
        suggestion: Option<Region>,
    },
}

impl fmt::Display for TopologyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StorageInPrimaryRegion {
                replication,
                storage,
                region,
                suggestion,
            } => {
                write!(
                    f,
                    "replication `{replication}`: storage `{storage}` is in {region}, the primary's region; \
                     if that region fails, the backups fail with it"
                )?;
                match suggestion {
                    Some(pair) => write!(
                        f,
                        " (consider a storage account in the paired region {pair})"
                    ),
                    None => write!(f, " (consider a storage account in the standby's region)"),
                }
            }
        }
    }
}

/// A checked topology.
#[derive(Debug, Clone)]
pub struct Topology {
    services: Vec<ServiceNode>,
    storage: Vec<StorageNode>,
    replications: Vec<Replication>,
    graph: DiGraph<(), usize>,
    warnings: Vec<TopologyWarning>,
}

impl Topology {
    /// Builds and checks the topology of a parsed configuration.
    pub fn from_config(config: &Config) -> Result<Self, TopologyErrors> {
        let services = config
            .services
            .iter()
            .map(|s| ServiceNode {
                service: s.service.clone(),
                region: s.region,
                sku: s.sku,
                role: s.role,
            })
            .collect();
        let storage = config
            .storage
            .iter()
            .map(|s| StorageNode {
                name: s.name.clone(),
                region: s.region,
                target: s.target.clone(),
            })
            .collect();
        let replications = config
            .replications
            .iter()
            .map(|r| Replication {
                name: r.name.clone(),
                from: r.from.clone(),
                to: r.to.clone(),
                storage: r.storage.clone(),
                rpo: r.rpo,
                retention: r.retention,
                rto: r.rto,
                verify: r.verify,
            })
            .collect();
        Self::new(services, storage, replications)
    }

    /// Builds and checks a topology from its parts.
    pub fn new(
        services: Vec<ServiceNode>,
        storage: Vec<StorageNode>,
        replications: Vec<Replication>,
    ) -> Result<Self, TopologyErrors> {
        let mut errors = Vec::new();
        let index: BTreeMap<String, usize> = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name().to_ascii_lowercase(), i))
            .collect();
        let find = |name: &str| index.get(&name.to_ascii_lowercase()).copied();

        let mut graph = DiGraph::new();
        for _ in 0..services.len() {
            graph.add_node(());
        }
        // Sources of each target: (replication, source name).
        let mut sources: BTreeMap<usize, Vec<(String, String)>> = BTreeMap::new();
        for (ri, r) in replications.iter().enumerate() {
            let from = find(&r.from);
            if from.is_none() {
                errors.push(TopologyError::UnknownService {
                    replication: r.name.clone(),
                    service: r.from.clone(),
                });
            }
            if !storage.iter().any(|s| s.name == r.storage) {
                errors.push(TopologyError::UnknownStorage {
                    replication: r.name.clone(),
                    storage: r.storage.clone(),
                });
            }
            for t in &r.to {
                let Some(to) = find(t) else {
                    errors.push(TopologyError::UnknownService {
                        replication: r.name.clone(),
                        service: t.clone(),
                    });
                    continue;
                };
                sources
                    .entry(to)
                    .or_default()
                    .push((r.name.clone(), r.from.clone()));
                if let Some(from) = from {
                    graph.add_edge(NodeIndex::new(from), NodeIndex::new(to), ri);
                }
            }
        }

        // Cycles (including a service replicating into itself).
        let mut cycles: Vec<String> = tarjan_scc(&graph)
            .into_iter()
            .filter(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
            .map(|scc| {
                let scc: Vec<usize> = scc.into_iter().map(NodeIndex::index).collect();
                cycle_path(&graph, &scc, &services)
            })
            .collect();
        cycles.sort();
        errors.extend(cycles.into_iter().map(|path| TopologyError::Cycle { path }));

        for (target, srcs) in &sources {
            if srcs.len() > 1 {
                let list: Vec<String> = srcs
                    .iter()
                    .map(|(r, f)| format!("`{r}` from `{f}`"))
                    .collect();
                errors.push(TopologyError::TwoSources {
                    target: services[*target].name().to_owned(),
                    sources: list.join(", "),
                });
            }
        }

        for r in &replications {
            let Some(fi) = find(&r.from) else { continue };
            let from = &services[fi];
            if !from.sku.supports_backup_restore() {
                errors.push(TopologyError::UnsupportedTier {
                    replication: r.name.clone(),
                    service: from.name().to_owned(),
                    tier: from.sku.tier.to_string(),
                });
            }
            if from.role != Role::Primary {
                errors.push(TopologyError::ConflictingRole {
                    replication: r.name.clone(),
                    service: from.name().to_owned(),
                    role: from.role,
                    used_as: "source",
                    hint: "only a primary is backed up; set role = \"primary\" or change `from`",
                });
            }
            for t in &r.to {
                let Some(ti) = find(t) else { continue };
                let to = &services[ti];
                if !to.sku.supports_backup_restore() {
                    errors.push(TopologyError::UnsupportedTier {
                        replication: r.name.clone(),
                        service: to.name().to_owned(),
                        tier: to.sku.tier.to_string(),
                    });
                } else if from.sku.tier != to.sku.tier {
                    errors.push(TopologyError::SkuMismatch {
                        replication: r.name.clone(),
                        from: from.name().to_owned(),
                        from_sku: from.sku,
                        to: to.name().to_owned(),
                        to_sku: to.sku,
                    });
                }
                if to.role == Role::Primary {
                    errors.push(TopologyError::ConflictingRole {
                        replication: r.name.clone(),
                        service: to.name().to_owned(),
                        role: to.role,
                        used_as: "target",
                        hint: "a restore would overwrite a primary; set role = \"standby\" or \"staging\"",
                    });
                }
                if to.role == Role::Standby && to.region == from.region {
                    errors.push(TopologyError::StandbyInPrimaryRegion {
                        replication: r.name.clone(),
                        standby: to.name().to_owned(),
                        primary: from.name().to_owned(),
                        region: to.region,
                    });
                }
            }
        }

        if !errors.is_empty() {
            return Err(TopologyErrors(errors));
        }

        let mut warnings = Vec::new();
        for r in &replications {
            let from = &services[find(&r.from).expect("checked")];
            let is_dr =
                r.to.iter()
                    .any(|t| services[find(t).expect("checked")].role == Role::Standby);
            let st = storage
                .iter()
                .find(|s| s.name == r.storage)
                .expect("checked");
            if is_dr && st.region == from.region {
                warnings.push(TopologyWarning::StorageInPrimaryRegion {
                    replication: r.name.clone(),
                    storage: st.name.clone(),
                    region: st.region,
                    suggestion: from.region.pair(),
                });
            }
        }

        Ok(Self {
            services,
            storage,
            replications,
            graph,
            warnings,
        })
    }

    /// Warnings found while checking.
    pub fn warnings(&self) -> &[TopologyWarning] {
        &self.warnings
    }

    /// Every service, in configuration order.
    pub fn services(&self) -> &[ServiceNode] {
        &self.services
    }

    /// Every replication, in configuration order.
    pub fn replications(&self) -> &[Replication] {
        &self.replications
    }

    /// Every storage entry, in configuration order.
    pub fn storage_entries(&self) -> &[StorageNode] {
        &self.storage
    }

    /// The service called `name` (case-insensitive, as Azure compares names).
    pub fn service(&self, name: &str) -> Option<&ServiceNode> {
        self.services
            .iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// The replication called `name`.
    pub fn replication(&self, name: &str) -> Option<&Replication> {
        self.replications.iter().find(|r| r.name == name)
    }

    /// The storage entry a replication uses.
    pub fn storage_of(&self, replication: &Replication) -> &StorageNode {
        self.storage
            .iter()
            .find(|s| s.name == replication.storage)
            .expect("checked at build")
    }

    /// The storage entry called `name`.
    pub fn storage(&self, name: &str) -> Option<&StorageNode> {
        self.storage.iter().find(|s| s.name == name)
    }

    /// The replication that restores into `target`, if any (at most one: checked at build).
    pub fn replication_into(&self, target: &str) -> Option<&Replication> {
        self.replications
            .iter()
            .find(|r| r.to.iter().any(|t| t.eq_ignore_ascii_case(target)))
    }

    /// The replications whose source is `source`.
    pub fn replications_from<'a>(
        &'a self,
        source: &'a str,
    ) -> impl Iterator<Item = &'a Replication> {
        self.replications
            .iter()
            .filter(move |r| r.from.eq_ignore_ascii_case(source))
    }

    /// The number of replication edges (source -> target pairs) in the graph.
    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }
}

/// Renders one strongly connected component as a cycle `a -> b -> a`, starting from the
/// alphabetically first service so the message is stable.
fn cycle_path(graph: &DiGraph<(), usize>, scc: &[usize], services: &[ServiceNode]) -> String {
    let name = |i: usize| services[i].name().to_owned();
    let start = *scc.iter().min_by_key(|i| name(**i)).expect("non-empty");
    let mut path = vec![start];
    let mut current = start;
    loop {
        let mut next: Vec<usize> = graph
            .neighbors(NodeIndex::new(current))
            .map(NodeIndex::index)
            .filter(|n| scc.contains(n))
            .collect();
        next.sort_by_key(|n| name(*n));
        let step = next
            .iter()
            .copied()
            .find(|n| *n == start || !path.contains(n))
            .unwrap_or(start);
        path.push(step);
        if step == start || path.len() > scc.len() + 1 {
            break;
        }
        current = step;
    }
    path.into_iter().map(name).collect::<Vec<_>>().join(" -> ")
}
