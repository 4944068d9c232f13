//! Harness for end-to-end tests: starts the real `switchyard` binary (and, in later suites,
//! Envoy, the bundled proxy and a kube-apiserver) on loopback and drives them.

#![forbid(unsafe_code)]
