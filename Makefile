# HotPlex Edge — the two commands: `make run` and `make test`.
.PHONY: run test lint deps build fmt clean conf-check k8s-check systemd-check systemd-e2e obs-e2e bench bench-micro bench-quick bench-workload

CARGO ?= cargo

deps:
	@bash scripts/install-deps.sh

## make run: proxy on 127.0.0.1:8000 (admin 9900) in front of 3 workers on 8081-8083.
run: deps
	@bash scripts/run-local.sh

## make test: every test of the workspace (unit + end-to-end on loopback).
test:
	@bash scripts/install-deps.sh redis-server:redis-server python3 bubblewrap:bwrap iproute2:ip
	HOTPLEX_E2E_QUIET=1 $(CARGO) test --workspace --all-targets --no-fail-fast

## make lint: rustfmt and clippy, warnings are errors; the test-quality check of the
## end-to-end suites (scripts/check-tests.py: no /proc existence checks, no #[path], no
## sleep over 100 ms without an `allow-sleep:` reason); the import cycles between the proxy's
## top-level modules (scripts/check-cycles.py).
lint: deps
	$(CARGO) fmt --all -- --check
	python3 scripts/check-tests.py tests
	python3 scripts/test_check_cycles.py
	python3 scripts/check-cycles.py proxy/src
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build: deps
	$(CARGO) build --workspace --release

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

## make conf-check: promtool validates the Prometheus config and alert rules and runs the rule unit tests;
## the observability stack's configs (conf/k8s/observability) are current and consistent.
conf-check:
	@bash scripts/install-deps.sh prometheus:promtool
	promtool check config conf/prometheus/prometheus.yml
	promtool check rules conf/prometheus/alerts.yml
	promtool test rules conf/prometheus/alerts_test.yml
	@python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
	python3 scripts/obs-configmaps.py --check

## make k8s-check: validates conf/k8s against the Kubernetes schemas, offline (kubernetes-validate from PyPI);
## then what the manifests allow (scripts/check-k8s-security.py and its tests): no service account
## token, hardened securityContext, images and Dockerfile bases pinned by digest, an egress
## NetworkPolicy per pod that reaches no metadata service or private range, a narrow trusted_proxies;
## then the systemd units (make systemd-check).
k8s-check: systemd-check
	@command -v kubernetes-validate >/dev/null 2>&1 || python3 -m pip install -q kubernetes-validate
	kubernetes-validate --strict --quiet conf/k8s/*.yaml conf/k8s/observability/*.yaml
	@python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
	python3 scripts/check-k8s-security.py --dockerfile Dockerfile conf/k8s/*.yaml conf/k8s/observability/*.yaml
	python3 scripts/test_check_k8s_security.py

## make systemd-check: the systemd units (conf/systemd), offline: systemd-analyze verify (any message
## fails), each unit's `systemd-analyze security` exposure at or below its measured score, the
## service users (sysusers), the proxy's upgrade contract (scripts/check-systemd.sh).
systemd-check:
	@bash scripts/install-deps.sh systemd:systemd-analyze
	bash scripts/check-systemd.sh

## make systemd-e2e: the units run for real: boots systemd in a throwaway container (systemd-nspawn
## --volatile=overlay, own network namespace; needs root) with conf/systemd and the debug binaries:
## sandbox as the kernel sees it, a session, two `systemctl reload` upgrades (scripts/systemd-nspawn-test.sh).
systemd-e2e:
	$(CARGO) build --workspace --all-targets
	bash scripts/systemd-nspawn-test.sh

## make obs-e2e: a real Prometheus (Debian package) scrapes a proxy and 3 workers (debug
## builds) after real traffic, loads the alert rules and answers every dashboard panel.
obs-e2e:
	@bash scripts/install-deps.sh prometheus:prometheus
	bash scripts/prometheus-e2e.sh

## make bench: the criterion micro-benchmarks (routing decision, session-key extraction,
## rate-limit check; brief runs) and the load benchmark against nginx and HAProxy
## (benches/load_bench.sh: installs wrk, h2load, nginx, haproxy; fat-LTO build; ~15 min).
bench: deps bench-micro
	bash benches/load_bench.sh

bench-micro: deps
	$(CARGO) bench -p hotplex-proxy --benches -- --warm-up-time 1 --measurement-time 2

## make bench-quick: every load-bench scenario for ~2 s on debug binaries, then the workload
## scenario with 200 sessions for 10 s per target (a smoke run for CI).
bench-quick: deps
	bash benches/load_bench.sh --quick
	bash benches/workload.sh --quick

## make bench-workload: the workload our users run (benches/workload.sh): 2000 sessions doing
## SSE and WebSocket turns (49 events each) on 3 real workers with a fast fake agent, new
## sessions arriving steadily, through hotplex-proxy, directly and through nginx in one run
## (release build; 20 s think time, ~110 s ramp + 60 s window per target, ~11 min).
bench-workload: deps
	bash benches/workload.sh
