use super::*;
use crate::testing::{edge, primary, service, storage, topo};
use drsync_core::SkuTier;
use expect_test::{Expect, expect};

fn check_err(result: Result<Topology, TopologyErrors>, expect: Expect) {
    match result {
        Ok(_) => panic!("expected the topology to be refused"),
        Err(e) => expect.assert_eq(&e.to_string()),
    }
}

#[test]
fn valid_topology_builds_with_a_warning_for_same_region_storage() {
    let t = topo(
        vec![
            primary("apim-weu", "westeurope"),
            service("apim-neu", "northeurope", SkuTier::Premium, Role::Standby),
            service("apim-stg", "westeurope", SkuTier::Premium, Role::Staging),
        ],
        vec![storage("weu-backups", "westeurope")],
        vec![edge(
            "dr",
            "apim-weu",
            &["apim-neu", "apim-stg"],
            "weu-backups",
        )],
    )
    .unwrap();
    assert_eq!(t.edge_count(), 2);
    let warnings: Vec<String> = t.warnings().iter().map(|w| w.to_string()).collect();
    expect![[r#"
        [
            "replication `dr`: storage `weu-backups` is in westeurope, the primary's region; if that region fails, the backups fail with it (consider a storage account in the paired region northeurope)",
        ]
    "#]]
    .assert_debug_eq(&warnings);
    assert_eq!(t.replication_into("APIM-NEU").unwrap().name, "dr");
}

#[test]
fn staging_only_edge_in_primary_region_has_no_warning() {
    let t = topo(
        vec![
            primary("apim-weu", "westeurope"),
            service("apim-stg", "westeurope", SkuTier::Premium, Role::Staging),
        ],
        vec![storage("weu-backups", "westeurope")],
        vec![edge("stg", "apim-weu", &["apim-stg"], "weu-backups")],
    )
    .unwrap();
    assert!(t.warnings().is_empty());
}

#[test]
fn cycle_is_refused() {
    check_err(
        topo(
            vec![
                primary("apim-a", "westeurope"),
                service("apim-b", "northeurope", SkuTier::Premium, Role::Primary),
            ],
            vec![storage("neu", "northeurope")],
            vec![
                edge("ab", "apim-a", &["apim-b"], "neu"),
                edge("ba", "apim-b", &["apim-a"], "neu"),
            ],
        ),
        expect![[r#"
            the replication topology is invalid (3 problems):
              - replication cycle: apim-a -> apim-b -> apim-a (a service cannot be restored, directly or indirectly, from its own backups)
              - replication `ab`: service `apim-b` has role primary but is used as a target; a restore would overwrite a primary; set role = "standby" or "staging"
              - replication `ba`: service `apim-a` has role primary but is used as a target; a restore would overwrite a primary; set role = "standby" or "staging""#]],
    );
}

#[test]
fn target_with_two_sources_is_refused() {
    check_err(
        topo(
            vec![
                primary("apim-a", "westeurope"),
                primary("apim-b", "eastus"),
                service("apim-c", "northeurope", SkuTier::Premium, Role::Standby),
            ],
            vec![storage("neu", "northeurope")],
            vec![
                edge("a", "apim-a", &["apim-c"], "neu"),
                edge("b", "apim-b", &["apim-c"], "neu"),
            ],
        ),
        expect![[r#"
            the replication topology is invalid (1 problem):
              - service `apim-c` is the target of more than one replication (`a` from `apim-a`, `b` from `apim-b`); each target must have exactly one source"#]],
    );
}

#[test]
fn sku_mismatch_is_refused() {
    check_err(
        topo(
            vec![
                primary("apim-a", "westeurope"),
                service("apim-b", "northeurope", SkuTier::Standard, Role::Standby),
            ],
            vec![storage("neu", "northeurope")],
            vec![edge("dr", "apim-a", &["apim-b"], "neu")],
        ),
        expect![[r#"
            the replication topology is invalid (1 problem):
              - replication `dr`: SKU mismatch: source `apim-a` is Premium (1 unit), target `apim-b` is Standard (1 unit); Azure restores a backup only into the same tier"#]],
    );
}

#[test]
fn unsupported_tier_is_refused() {
    check_err(
        topo(
            vec![
                service("apim-a", "westeurope", SkuTier::StandardV2, Role::Primary),
                service("apim-b", "northeurope", SkuTier::StandardV2, Role::Standby),
            ],
            vec![storage("neu", "northeurope")],
            vec![edge("dr", "apim-a", &["apim-b"], "neu")],
        ),
        expect![[r#"
            the replication topology is invalid (2 problems):
              - replication `dr`: service `apim-a` is on the StandardV2 tier, which does not support backup and restore (supported: Developer, Basic, Standard, Premium)
              - replication `dr`: service `apim-b` is on the StandardV2 tier, which does not support backup and restore (supported: Developer, Basic, Standard, Premium)"#]],
    );
}

#[test]
fn standby_in_primary_region_is_refused() {
    check_err(
        topo(
            vec![
                primary("apim-a", "westeurope"),
                service("apim-b", "westeurope", SkuTier::Premium, Role::Standby),
            ],
            vec![storage("neu", "northeurope")],
            vec![edge("dr", "apim-a", &["apim-b"], "neu")],
        ),
        expect![[r#"
            the replication topology is invalid (1 problem):
              - replication `dr`: standby `apim-b` is in westeurope, the same region as its primary `apim-a`; a DR standby must be in another region (use role = "staging" for a same-region copy)"#]],
    );
}

#[test]
fn standby_used_as_source_is_refused() {
    check_err(
        topo(
            vec![
                primary("apim-a", "westeurope"),
                service("apim-b", "northeurope", SkuTier::Premium, Role::Standby),
                service("apim-c", "eastus", SkuTier::Premium, Role::Standby),
            ],
            vec![storage("neu", "northeurope")],
            vec![
                edge("ab", "apim-a", &["apim-b"], "neu"),
                edge("bc", "apim-b", &["apim-c"], "neu"),
            ],
        ),
        expect![[r#"
            the replication topology is invalid (1 problem):
              - replication `bc`: service `apim-b` has role standby but is used as a source; only a primary is backed up; set role = "primary" or change `from`"#]],
    );
}

#[test]
fn unknown_names_are_refused() {
    check_err(
        topo(
            vec![primary("apim-a", "westeurope")],
            vec![storage("neu", "northeurope")],
            vec![edge("dr", "apim-a", &["apim-x"], "nowhere")],
        ),
        expect![[r#"
            the replication topology is invalid (2 problems):
              - replication `dr` names storage `nowhere`, which is not configured
              - replication `dr` names service `apim-x`, which is not configured"#]],
    );
}

#[test]
fn self_replication_is_a_cycle() {
    check_err(
        topo(
            vec![primary("apim-a", "westeurope")],
            vec![storage("neu", "northeurope")],
            vec![edge("dr", "apim-a", &["apim-a"], "neu")],
        ),
        expect![[r#"
            the replication topology is invalid (2 problems):
              - replication cycle: apim-a -> apim-a (a service cannot be restored, directly or indirectly, from its own backups)
              - replication `dr`: service `apim-a` has role primary but is used as a target; a restore would overwrite a primary; set role = "standby" or "staging""#]],
    );
}
