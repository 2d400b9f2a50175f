//! Priority levels from locality and a FailoverPolicy's targets (DESIGN.md
//! "Failover plan", `docs/failover.md`).

/// Where a workload or endpoint group sits.
///
/// In xDS terms `region`, `zone` and `sub_zone` (= `cluster`) of
/// `envoy.config.core.v3.Locality`. Empty strings are ordinary values: two
/// empty zones are the same zone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Locality {
    /// Region, e.g. `eu-west`.
    pub region: String,
    /// Zone inside the region, e.g. `eu-west-1a`.
    pub zone: String,
    /// The Isthmus cluster (mesh member) the endpoints belong to.
    pub cluster: String,
}

/// A FailoverPolicy target (`spec.targets[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `{cluster: <name>}`: the localities of that cluster.
    Cluster(String),
    /// `{region: <name>}`: the localities of that region.
    Region(String),
}

/// Priority of each locality as seen from `client`: dense, from 0, no gaps,
/// one per entry of `localities` in the same order.
///
/// Ranks, best first:
/// 1. same cluster and same zone as the client;
/// 2. same cluster;
/// 3. another cluster in the same region;
/// 4. each policy target in order (a [`Target::Cluster`] matches
///    `locality.cluster`, a [`Target::Region`] `locality.region`; the first
///    matching target counts);
/// 5. everything else.
///
/// Ranks nobody occupies are skipped, so the result always starts at 0 and
/// has no gaps (Envoy: "Priorities should range from 0 (highest) to N
/// (lowest) without skipping").
pub fn assign_priorities(
    client: &Locality,
    targets: &[Target],
    localities: &[Locality],
) -> Vec<u32> {
    let ranks: Vec<usize> = localities
        .iter()
        .map(|locality| rank(client, targets, locality))
        .collect();
    let mut used = ranks.clone();
    used.sort_unstable();
    used.dedup();
    ranks
        .iter()
        .map(|rank| {
            // `rank` is in `used` by construction; the position of a rank
            // among the occupied ones is its dense priority.
            let dense = used.binary_search(rank).unwrap_or(0);
            u32::try_from(dense).unwrap_or(u32::MAX)
        })
        .collect()
}

/// The sparse rank of one locality (see [`assign_priorities`]).
fn rank(client: &Locality, targets: &[Target], locality: &Locality) -> usize {
    const SAME_ZONE: usize = 0;
    const SAME_CLUSTER: usize = 1;
    const SAME_REGION: usize = 2;
    const FIRST_TARGET: usize = 3;

    if locality.cluster == client.cluster {
        if locality.zone == client.zone {
            SAME_ZONE
        } else {
            SAME_CLUSTER
        }
    } else if locality.region == client.region {
        SAME_REGION
    } else {
        let matched = targets.iter().position(|target| match target {
            Target::Cluster(cluster) => *cluster == locality.cluster,
            Target::Region(region) => *region == locality.region,
        });
        FIRST_TARGET + matched.unwrap_or(targets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(region: &str, zone: &str, cluster: &str) -> Locality {
        Locality {
            region: region.into(),
            zone: zone.into(),
            cluster: cluster.into(),
        }
    }

    fn client() -> Locality {
        loc("eu", "eu-1a", "a")
    }

    #[test]
    fn every_rank_occupied_gives_the_documented_order() {
        let localities = [
            loc("us", "us-1a", "z"), // the rest
            loc("ap", "ap-1a", "c"), // target 2 (region ap)
            loc("us", "us-1a", "b"), // target 1 (cluster b)
            loc("eu", "eu-1b", "d"), // other cluster, same region
            loc("eu", "eu-1b", "a"), // same cluster, other zone
            loc("eu", "eu-1a", "a"), // same cluster and zone
        ];
        let targets = [Target::Cluster("b".into()), Target::Region("ap".into())];
        assert_eq!(
            assign_priorities(&client(), &targets, &localities),
            [5, 4, 3, 2, 1, 0]
        );
    }

    #[test]
    fn unoccupied_ranks_are_skipped() {
        // No same-zone, no same-region locality: same cluster is P0, the
        // target P1, the rest P2.
        let localities = [
            loc("us", "x", "z"),
            loc("eu", "eu-1c", "a"),
            loc("us", "x", "b"),
        ];
        let targets = [Target::Cluster("b".into())];
        assert_eq!(
            assign_priorities(&client(), &targets, &localities),
            [2, 0, 1]
        );
    }

    #[test]
    fn client_without_local_endpoints_starts_at_the_first_target() {
        let localities = [loc("us", "x", "b"), loc("ap", "y", "c")];
        let targets = [Target::Cluster("c".into()), Target::Cluster("b".into())];
        assert_eq!(assign_priorities(&client(), &targets, &localities), [1, 0]);
    }

    #[test]
    fn first_matching_target_wins() {
        // Cluster b is in region us: the region target comes first.
        let localities = [loc("us", "x", "b")];
        let targets = [
            Target::Region("ap".into()),
            Target::Region("us".into()),
            Target::Cluster("b".into()),
        ];
        assert_eq!(assign_priorities(&client(), &targets, &localities), [0]);
        let localities = [loc("us", "x", "b"), loc("ap", "y", "c")];
        assert_eq!(assign_priorities(&client(), &targets, &localities), [1, 0]);
    }

    #[test]
    fn locality_rules_win_over_targets() {
        // A target naming the client's own region does not demote a
        // same-region cluster below it.
        let localities = [loc("eu", "eu-1b", "d"), loc("us", "x", "b")];
        let targets = [Target::Cluster("b".into()), Target::Region("eu".into())];
        assert_eq!(assign_priorities(&client(), &targets, &localities), [0, 1]);
    }

    #[test]
    fn without_targets_remote_clusters_share_the_last_level() {
        let localities = [
            loc("eu", "eu-1a", "a"),
            loc("us", "x", "b"),
            loc("ap", "y", "c"),
        ];
        assert_eq!(assign_priorities(&client(), &[], &localities), [0, 1, 1]);
    }

    #[test]
    fn equal_localities_share_a_level_and_empty_input_gives_nothing() {
        let localities = [loc("eu", "eu-1a", "a"), loc("eu", "eu-1a", "a")];
        assert_eq!(assign_priorities(&client(), &[], &localities), [0, 0]);
        assert!(assign_priorities(&client(), &[], &[]).is_empty());
    }

    #[test]
    fn priorities_are_dense_for_every_subset_of_localities() {
        // Exhaustive over the 2^6 subsets of one locality per rank.
        let all = [
            loc("eu", "eu-1a", "a"),
            loc("eu", "eu-1b", "a"),
            loc("eu", "eu-1b", "d"),
            loc("us", "x", "b"),
            loc("ap", "y", "c"),
            loc("sa", "z", "e"),
        ];
        let targets = [Target::Cluster("b".into()), Target::Region("ap".into())];
        for mask in 0u32..64 {
            let subset: Vec<Locality> = (0..6)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| all[i].clone())
                .collect();
            let got = assign_priorities(&client(), &targets, &subset);
            // Dense: exactly 0..n, in the documented order of `all`.
            let want: Vec<u32> = (0..u32::try_from(subset.len()).unwrap_or(0)).collect();
            assert_eq!(got, want, "mask {mask:06b}");
        }
    }
}
