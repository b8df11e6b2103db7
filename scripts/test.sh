#!/usr/bin/env bash
# The one test command: installs what the tests need, then checks formatting,
# vets, runs every test of the module with the race detector, fuzzes the
# readers of untrusted input briefly (the shm file's records, header and
# whole file; the wasm rewriter), and runs bench/'s tests and one pass of
# every benchmark (without the race detector, which would time them
# nothing like production). CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "== gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*'))
if [ -n "$bad" ]; then echo "gofmt would change:"; echo "$bad"; exit 1; fi

echo "== go vet"
go vet ./...
(cd bench && go vet ./...)

echo "== io_uring"
# The host's io_uring waiter must be tested wherever the kernel has it;
# only a run that says why (TAPES_NO_URING=1) lets its tests skip. A
# seccomp filter refusing io_uring is said here, not passed over.
if [ "${TAPES_NO_URING:-}" != 1 ] && [ "$(uname -s)" = Linux ]; then
  probe=$(go run ./shm/internal/uring/probe || true)
  echo "$probe"
  case "$probe" in
  ok) ;;
  refused:*)
    echo "io_uring is refused here (seccomp): its tests do not run; the relay's and futex's do (TAPES_NO_URING=1)"
    export TAPES_NO_URING=1 ;;
  *) echo "this kernel has no io_uring futex wait (Linux 6.7+ needed); set TAPES_NO_URING=1 to test without it"; exit 1 ;;
  esac
fi

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

echo "== fuzz (~10 s per target here; run longer by hand with a larger -fuzztime)"
# Budgets are counts of executions, not durations: with a duration, Go 1.26's
# fuzz coordinator can report "context deadline exceeded" as a failure when
# the time runs out mid-execution (golang/go#75804, fixed in Go 1.27).
fuzz() { go test -run '^$' -fuzz "^$2\$" -fuzztime "$3" -fuzzminimizetime 200x "$1"; }
fuzz ./shm/host FuzzDecode 300000x
fuzz ./shm/internal/layout FuzzValidate 500000x
fuzz ./shm/host FuzzOpenFile 30000x
fuzz ./hostabi/internal/interrupt FuzzRewrite 100000x
fuzz ./hostabi/internal/interrupt FuzzTermination 3000x

echo "== bench module (tests and one pass of every benchmark)"
(cd bench && go test -count=1 -timeout 20m -run . -bench . -benchtime 1x ./...)
