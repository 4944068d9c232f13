use serde_json::json;

use super::*;

fn dump() -> ConfigDump {
    serde_json::from_value(json!({
        "proxy": "demo/client-0",
        "node": "demo/client-0",
        "data_plane": "envoy 1.40.0",
        "protocol": "sotw",
        "types": {
            "CDS": {
                "state": "SYNCED",
                "version": "00000000000000aa",
                "resources": [
                    {"@type": TypeUrl::Cluster.type_url(), "name": "demo/web-v1|80", "type": "EDS",
                     "edsClusterConfig": {"serviceName": "demo/web-v1|80"}},
                    {"@type": TypeUrl::Cluster.type_url(), "name": "demo/api|80", "type": "EDS",
                     "transportSocket": {"name": "envoy.transport_sockets.tls"}},
                    {"@type": TypeUrl::Cluster.type_url(), "name": "passthrough", "type": "ORIGINAL_DST"}
                ]
            },
            "EDS": {
                "state": "SYNCED",
                "version": "00000000000000bb",
                "resources": [
                    {"clusterName": "demo/api|80", "endpoints": [{"lbEndpoints": [
                        {"endpoint": {"address": {"socketAddress": {"address": "10.0.0.1", "portValue": 8080}}}},
                        {"endpoint": {"address": {"socketAddress": {"address": "10.0.0.2", "portValue": 8080}}}}
                    ]}]},
                    {"clusterName": "demo/web-v1|80", "endpoints": [{"lbEndpoints": [
                        {"endpoint": {"address": {"socketAddress": {"address": "10.0.1.1", "portValue": 80}}}}
                    ]}]}
                ]
            },
            "LDS": {"state": "STALE", "version": null, "resources": []},
            "RDS": {
                "state": "NACKED",
                "message": "route 80: bad",
                "version": "00000000000000cc",
                "resources": [
                    {"name": "80", "virtualHosts": [{"domains": ["web.demo", "web"], "routes": [
                        {"match": {"prefix": "/"}, "route": {"weightedClusters": {"clusters": [
                            {"name": "demo/web-v1|80", "weight": 90},
                            {"name": "demo/web-v2|80", "weight": 10}
                        ]}}}
                    ]}, {"domains": ["api.demo"], "routes": [
                        {"match": {"prefix": "/"}, "route": {"cluster": "demo/api|80"}}
                    ]}]}
                ],
                "nacked": {"version": "00000000000000dd", "message": "route 80: bad"},
                "omitted": 2
            },
            "SDS": {
                "state": "SYNCED",
                "version": "00000000000000ee",
                "resources": [
                    {"name": "spiffe://cluster.local/ns/demo/sa/client",
                     "tlsCertificate": {"privateKey": "[redacted]"}}
                ]
            }
        }
    }))
    .unwrap()
}

#[test]
fn the_table_lists_each_resource_with_a_summary() {
    let table = table(&dump());
    let expected = "\
PROXY demo/client-0  DATA PLANE envoy 1.40.0  PROTOCOL sotw

CDS  SYNCED  version 00000000000000aa
  NAME            SUMMARY
  demo/web-v1|80  eds, 1 endpoint
  demo/api|80     eds, 2 endpoints, tls
  passthrough     original_dst, 0 endpoints

EDS  SYNCED  version 00000000000000bb
  NAME            SUMMARY
  demo/api|80     2 endpoints: 10.0.0.1:8080 10.0.0.2:8080
  demo/web-v1|80  1 endpoint: 10.0.1.1:80

LDS  STALE  version -
  (none)

RDS  NACKED  version 00000000000000cc
  NAME  SUMMARY
  80    web.demo → demo/web-v1|80 90, demo/web-v2|80 10 | api.demo → demo/api|80
  ... 2 more left out to bound the answer; ask for this type alone (--type rds)
NACKED version 00000000000000dd: route 80: bad

SDS  SYNCED  version 00000000000000ee
  NAME                                      SUMMARY
  spiffe://cluster.local/ns/demo/sa/client  tls certificate
";
    assert_eq!(table, expected, "\n{table}");
}

#[test]
fn a_pod_name_takes_the_namespace_unless_it_has_one() {
    assert_eq!(proxy_name("client-0", "demo"), "demo/client-0");
    assert_eq!(proxy_name("shop/web-0", "demo"), "shop/web-0");
}

#[test]
fn a_resource_that_did_not_render_says_so() {
    let r = json!({"@type": "x", "error": "unknown type", "bytes": 3});
    assert_eq!(
        summary(TypeUrl::Cluster, &r, &BTreeMap::new()),
        "cannot show: unknown type"
    );
    let mesh = json!({"name": "demo/api|80", "type": "EDS",
        "transportSocketMatches": [{"name": "mtls"}]});
    let endpoints = BTreeMap::from([("demo/api|80".to_owned(), 3)]);
    assert_eq!(
        summary(TypeUrl::Cluster, &mesh, &endpoints),
        "eds, 3 endpoints, mtls"
    );
}
