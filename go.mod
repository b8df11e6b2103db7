module github.com/tapes-go/tapes

go 1.25.0

require (
	github.com/cactus/go-statsd-client/v5 v5.1.0
	github.com/edsrzf/mmap-go v1.2.0
	github.com/tetratelabs/wazero v1.12.0
	golang.org/x/sys v0.44.0
)
