# wsgate: make targets are the front door. `make run` and `make test` are the two
# commands a newcomer needs; both install what they need on a fresh machine.
SHELL   := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"

.PHONY: build run test test-go test-fuzz test-deploy test-js test-python test-observability test-gateway demo-fastapi fuzz soak bench lint deps

## build: the static binary, exactly as the Dockerfile builds it.
build:
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o bin/wsgate ./cmd/wsgate

## run: wsgate on its embedded default (demo upstream + in-process broker); no other service.
run:
	go run ./cmd/wsgate demo

## test: every suite: Go (race, goleak, real redis-server), charts and manifests, JS client and browser, Python, observability, Traefik gateway.
test: deps lint test-go test-fuzz test-deploy test-js test-python test-observability test-gateway

deps:
	./scripts/deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	go vet ./...

test-go:
	go test -race -count=1 -timeout 20m ./...

test-deploy:
	./scripts/test-deploy.sh

test-js:
	./scripts/test-js.sh

## demo-fastapi: the React page, wsgate serve, Redis and the example FastAPI service on loopback, for a browser.
demo-fastapi:
	./scripts/demo-fastapi.sh

## test-python: the Python publisher, identity verifier and example FastAPI service (real redis-server and wsgate).
test-python:
	./scripts/test-python.sh

## test-observability: promtool check/test of the chart's alerts; a real Prometheus runs every dashboard query.
test-observability:
	./scripts/test-observability.sh

## test-gateway: browser → Traefik (built once, cached) → wsgate → upstream, configured from deploy/traefik.
test-gateway:
	./scripts/test-gateway.sh

fuzz:
	./scripts/fuzz.sh $${FUZZTIME:-30s}

## test-fuzz: every fuzz target for 20,000 inputs (CI's bounded run; `make fuzz` runs longer).
## A count, not a duration: Go 1.26's fuzz coordinator can fail a run at its own deadline (go.dev/issue/75804).
test-fuzz:
	FUZZ_PARALLEL=1 ./scripts/fuzz.sh 20000x

soak:
	go run ./cmd/wssoak $${SOAK_FLAGS:-}

bench:
	./scripts/bench.sh
