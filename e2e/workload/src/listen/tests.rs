use super::*;

#[test]
fn port_alone_means_every_ipv4_address() {
    assert_eq!(
        "8080".parse::<ListenAddr>().unwrap().0,
        "0.0.0.0:8080".parse().unwrap()
    );
    assert_eq!(
        "[::1]:9".parse::<ListenAddr>().unwrap().0,
        "[::1]:9".parse().unwrap()
    );
    assert_eq!(
        "localhost:80"
            .parse::<ListenAddr>()
            .unwrap_err()
            .to_string(),
        "localhost:80: expected PORT or IP:PORT (such as 8080, 127.0.0.1:8080, [::1]:8080)"
    );
}
