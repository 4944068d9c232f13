use std::collections::BTreeMap;

use super::*;

fn status(proxy: &str, data_plane: &str, lds: TypeSync) -> Connected {
    let mut types: BTreeMap<String, TypeSync> = TypeUrl::ALL
        .iter()
        .map(|t| (t.short_name().to_owned(), TypeSync::Synced))
        .collect();
    types.insert("LDS".into(), lds);
    types.insert("SDS".into(), TypeSync::NotRequested);
    // An untapped proxy asks for no token bucket.
    types.insert("TBDS".into(), TypeSync::NotRequested);
    Connected {
        control_plane: "switchyard-7d9-abcde".into(),
        status: ProxyStatus {
            proxy: proxy.into(),
            node: proxy.into(),
            data_plane: data_plane.into(),
            protocol: "delta".into(),
            connected_at: 0,
            types,
        },
    }
}

#[test]
fn the_table_has_a_column_per_type_and_lists_each_nacks_reason() {
    let rows = [
        status("shop/web-0", "envoy 1.40.0", TypeSync::Synced),
        status(
            "shop/api-0",
            "switchyard-proxy 0.1.0",
            TypeSync::Nacked {
                message: "listener inbound: bad".into(),
            },
        ),
        status("shop/db-0", "envoy 1.40.0", TypeSync::Stale),
    ];
    let text = table(&rows);
    let lines: Vec<&str> = text.lines().collect();
    let columns: Vec<&str> = lines[0].split("  ").filter(|c| !c.is_empty()).collect();
    assert_eq!(
        columns.iter().map(|c| c.trim()).collect::<Vec<_>>(),
        [
            "PROXY",
            "DATA PLANE",
            "PROTOCOL",
            "CDS",
            "EDS",
            "LDS",
            "RDS",
            "SDS",
            "TBDS",
            "CONTROL PLANE"
        ]
    );
    let cells = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        cells(lines[1]),
        [
            "shop/web-0",
            "envoy 1.40.0",
            "delta",
            "SYNCED",
            "SYNCED",
            "SYNCED",
            "SYNCED",
            "-",
            "-",
            "switchyard-7d9-abcde"
        ]
    );
    assert_eq!(cells(lines[2])[5], "NACKED");
    assert_eq!(cells(lines[3])[5], "STALE");
    assert_eq!(lines[4], "NACKED shop/api-0 LDS: listener inbound: bad");
    assert_eq!(lines.len(), 5);
    assert_eq!(table(&[]).lines().last(), Some("no proxy is connected"));
}

#[test]
fn an_answer_that_is_not_a_proxy_list_is_an_error_naming_its_source() {
    let err = parse("switchyard-0", b"<html>").unwrap_err();
    assert!(format!("{err:#}").contains("switchyard-0"), "{err:#}");
    let ok = parse("127.0.0.1:15014", b"[]").unwrap();
    assert!(ok.is_empty());
}
