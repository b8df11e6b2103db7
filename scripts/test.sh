#!/usr/bin/env bash
# The one test command: installs what the tests need, then checks formatting,
# vets, and runs every test of the module and of bench/ with the race
# detector. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "== gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*'))
if [ -n "$bad" ]; then echo "gofmt would change:"; echo "$bad"; exit 1; fi

echo "== go vet"
go vet ./...
(cd bench && go vet ./...)

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

echo "== fuzz (10 s per target here; run longer by hand with -fuzztime)"
for target in FuzzDecode FuzzValidate FuzzOpenFile; do
  go test -run '^$' -fuzz "^${target}\$" -fuzztime 10s ./shm
done
go test -run '^$' -fuzz '^FuzzRewrite$' -fuzztime 10s ./hostabi/internal/interrupt

echo "== bench module (tests and one pass of every benchmark)"
(cd bench && go test -count=1 -timeout 20m -run . -bench . -benchtime 1x ./...)
