use super::{EdgesArgs, Format, path, table, window};
use crate::edges::Edge;
use crate::edges::{End, Secured};
use std::time::Duration;

fn args(all: bool) -> EdgesArgs {
    EdgesArgs {
        namespace: "demo".to_owned(),
        all_namespaces: all,
        window: Duration::from_secs(90),
        control_plane: crate::cli::control_plane::ControlPlaneArgs {
            admin: None,
            operator_namespace: "switchyard-system".to_owned(),
            kubeconfig: None,
            as_user: None,
        },
        output: Format::Table,
    }
}

#[test]
fn the_path_names_the_window_and_the_namespace() {
    assert_eq!(
        path(&args(false)),
        "/apis/metrics.smi-spec.io/v1alpha1/edges?t=1m30s&namespace=demo"
    );
    assert_eq!(
        path(&args(true)),
        "/apis/metrics.smi-spec.io/v1alpha1/edges?t=1m30s"
    );
    assert!(window("11m").unwrap_err().contains("10m"));
    assert!(window("later").is_err());
}

#[test]
fn the_table_has_linkerds_columns_and_wide_adds_identities() {
    let edges = [
        Edge {
            src: End::Pod {
                namespace: "demo".to_owned(),
                name: "client-0".to_owned(),
            },
            dst: End::Service {
                namespace: "demo".to_owned(),
                name: "web".to_owned(),
            },
            client_id: Some("spiffe://cluster.local/ns/demo/sa/client".to_owned()),
            server_ids: vec!["spiffe://cluster.local/ns/demo/sa/web".to_owned()],
            secured: Secured::Mtls,
            success_count: 9,
            failure_count: 1,
        },
        Edge {
            src: End::Unmeshed,
            dst: End::Pod {
                namespace: "demo".to_owned(),
                name: "web-0".to_owned(),
            },
            client_id: None,
            server_ids: vec!["spiffe://cluster.local/ns/demo/sa/web".to_owned()],
            secured: Secured::ClientUnmeshed,
            success_count: 3,
            failure_count: 0,
        },
    ];
    let lines: Vec<Vec<String>> = table(&edges, false)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(lines[0], ["SRC", "DST", "SRC_NS", "DST_NS", "SECURED"]);
    assert_eq!(lines[1], ["pod/client-0", "svc/web", "demo", "demo", "√"]);
    assert_eq!(
        lines[2],
        [
            "(unmeshed)",
            "pod/web-0",
            "-",
            "demo",
            "×",
            "(client",
            "unmeshed)"
        ]
    );
    let wide = table(&edges, true);
    // Aligned by characters: SECURED's `√` and `×` take one column each.
    let server_id_at = |line: &str| {
        let byte = line.rfind("SERVER_ID").or_else(|| line.rfind("spiffe:"));
        line[..byte.unwrap()].chars().count()
    };
    let at: Vec<usize> = wide.lines().map(server_id_at).collect();
    assert!(at.iter().all(|&a| a == at[0]), "{at:?}\n{wide}");
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(&header[5..], ["CLIENT_ID", "SERVER_ID"]);
    assert!(wide.lines().nth(1).unwrap().ends_with(
        "spiffe://cluster.local/ns/demo/sa/client  spiffe://cluster.local/ns/demo/sa/web"
    ));
}
